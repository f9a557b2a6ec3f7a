"""Start the real proxy in-process on a free loopback port and talk real gRPC to it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from infrastructure.config.loader import deep_merge, validate
from infrastructure.container import Container
from infrastructure.server_runner import RunningServer, build_container, start
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

SCRIPTED_PLUGIN = "tests.support.scripted_models"

# Authentication is on by default; these tests are about everything else, so they switch it off
# (tests/integration/test_auth.py covers it, and that the default is on).
BASE_CONFIG: dict[str, Any] = {
    "server": {"host": "127.0.0.1", "port": 0, "grace_period_seconds": 2},
    "models": {"plugin_modules": [SCRIPTED_PLUGIN]},
    "auth": {"enabled": False},
    # The HTTP API has tests of its own (test_http_*.py), which switch it on.
    "http": {"enabled": False},
}


@dataclass
class Proxy:
    container: Container
    running: RunningServer
    channel: grpc.aio.Channel
    stub: pb_grpc.VibectlLLMProxyAsyncStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"


ProxyFactory = Callable[..., Awaitable[Proxy]]


@pytest.fixture
async def start_proxy() -> AsyncIterator[ProxyFactory]:
    """Factory: `await start_proxy({"limits": {...}})` merges the mapping over BASE_CONFIG."""
    started: list[Proxy] = []

    async def factory(config: Mapping[str, Any] | None = None, **container_overrides: Any) -> Proxy:
        settings = validate(deep_merge(BASE_CONFIG, config or {}))
        container = build_container(settings)
        for name, value in container_overrides.items():
            getattr(container, name).override(value)
        running = await start(container)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        proxy = Proxy(container, running, channel, pb_grpc.VibectlLLMProxyStub(channel))
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        await proxy.channel.close(None)
        await proxy.running.stop(0)
        proxy.container.gateway().close()
    # Async provider clients (openai's) close themselves from __del__ by scheduling a task on
    # the running loop. Collected later, under another test's loop, that task fails on this
    # closed loop and logs an ERROR into whichever test is running; collect them here instead.
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
async def proxy(start_proxy: ProxyFactory) -> Proxy:
    return await start_proxy()
