"""Limits that hold across processes (Redis), and what happens while Redis is away."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from adapters.grpc.health import LIMITS_SERVICE_NAME
from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import request
from tests.integration.limits_load import burst
from tests.integration.test_process import _port_of, _spawn
from tests.support.services import PrivateRedis

LIMIT = 60
SENT = 200


def _write_config(path: Path, extra: dict[str, Any]) -> Path:
    config = {
        "server": {"port": 0, "grace_period_seconds": 2},
        "auth": {"enabled": False},
        "logging": {"level": "WARNING"},
        "ledger": {"backend": "none"},
        "limits": {"max_requests_per_minute": LIMIT},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _start(
    config: Path, spawned: list[subprocess.Popen[str]], *extra: str, listeners: int = 1
) -> int:
    process = _spawn(config, "--log-level", "INFO", *extra)
    spawned.append(process)
    ports = {_port_of(process, []) for _ in range(listeners)}
    assert len(ports) == 1
    # The rest of the log is read all along, so that it can never fill the pipe.
    assert process.stderr is not None
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return ports.pop()


async def test_two_server_processes_sharing_redis_admit_exactly_the_limit(
    redis_url: str, tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    config = _write_config(
        tmp_path / "proxy.yaml", {"quotas": {"store": "redis", "redis_url": redis_url}}
    )
    ports = [_start(config, spawned), _start(config, spawned)]
    outcomes = await burst(ports, SENT)
    assert outcomes == {"ok": LIMIT, "RESOURCE_EXHAUSTED": SENT - LIMIT}


async def test_two_workers_without_redis_admit_exactly_the_limit(
    tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    config = _write_config(tmp_path / "proxy.yaml", {})
    # Both workers listening before the burst, so that the kernel spreads it over both.
    port = _start(config, spawned, "--workers", "2", listeners=2)
    outcomes = await burst([port], SENT)
    assert outcomes == {"ok": LIMIT, "RESOURCE_EXHAUSTED": SENT - LIMIT}


async def _ok(proxy_stub: Any) -> str:
    try:
        reply = await proxy_stub.Execute(request("hi", model="echo"))
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "ok" if reply.WhichOneof("result") == "success" else reply.error.error_code


async def _health(address: str, service: str) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=3
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def _until(check: Any, expected: str, timeout_s: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value == expected or asyncio.get_running_loop().time() > deadline:
            return str(value)
        await asyncio.sleep(0.1)


async def test_redis_away_fails_closed_then_recovers(
    start_proxy: ProxyFactory, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(
        {
            "quotas": {"store": "redis", "redis_url": private_redis.url},
            "limits": {"max_requests_per_minute": 1000},
            "ledger": {"backend": "none"},
        }
    )
    assert await _ok(proxy.stub) == "ok"
    assert await _until(lambda: _health(proxy.address, LIMITS_SERVICE_NAME), "SERVING") == "SERVING"
    private_redis.stop()
    with caplog.at_level(logging.INFO):
        outcomes = [await _ok(proxy.stub) for _ in range(5)]
        assert outcomes == ["UNAVAILABLE"] * 5
        assert await _until(lambda: _health(proxy.address, ""), "NOT_SERVING") == "NOT_SERVING"
        assert await _health(proxy.address, LIMITS_SERVICE_NAME) == "NOT_SERVING"
        private_redis.start()
        assert await _until(lambda: _ok(proxy.stub), "ok") == "ok"
        assert await _until(lambda: _health(proxy.address, ""), "SERVING") == "SERVING"
    assert proxy.container.admission().in_flight == 0
    assert not any(record.exc_info for record in caplog.records)


async def test_redis_away_fails_open_when_configured_and_counts_it(
    start_proxy: ProxyFactory, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(
        {
            "quotas": {
                "store": "redis",
                "redis_url": private_redis.url,
                "on_store_error": "fail_open",
            },
            "limits": {"max_requests_per_minute": 1000},
            "metrics": {"enabled": True, "port": 0},
            "ledger": {"backend": "none"},
        }
    )
    private_redis.stop()
    with caplog.at_level(logging.ERROR, logger="llm_proxy.admission"):
        outcomes = [await _ok(proxy.stub) for _ in range(5)]
    assert outcomes == ["ok"] * 5
    # Logged once, not once per request.
    assert len([r for r in caplog.records if "admitting requests unchecked" in r.getMessage()]) == 1
    assert await _until(lambda: _health(proxy.address, LIMITS_SERVICE_NAME), "NOT_SERVING") == (
        "NOT_SERVING"
    )
    assert await _health(proxy.address, "") == "SERVING"
    metrics = proxy.container.metrics()
    assert metrics is not None
    assert metrics.registry.get_sample_value("llm_proxy_limits_unchecked_total") == 5
    private_redis.start()
    assert await _until(lambda: _health(proxy.address, LIMITS_SERVICE_NAME), "SERVING") == (
        "SERVING"
    )
