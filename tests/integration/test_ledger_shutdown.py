"""Nothing is lost on SIGTERM: 5,000 requests, then the drain writes all 5,000 rows.

The ledger is configured so that nothing is written before the signal (one batch of up to
10,000 rows, flushed once a minute): every row in the store was written by the drain.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import yaml

from adapters.ledger.postgres import migrate
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.helpers import request
from tests.integration.test_process import _port_of, _spawn

REQUESTS = 5_000
CONCURRENCY = 32
HELD_BACK = {"batch_size": 10_000, "flush_interval_seconds": 60}


async def _send_all(port: int) -> tuple[int, int]:
    """Sends REQUESTS prompts over a few connections; the token sums the server reported."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    stubs = [pb_grpc.VibectlLLMProxyStub(channel) for channel in channels]
    sums = [0, 0]
    next_index = iter(range(REQUESTS))

    async def worker(stub: pb_grpc.VibectlLLMProxyAsyncStub) -> None:
        for index in next_index:
            words = " ".join(["w"] * (1 + index % 7))
            reply = await stub.Execute(request(words, model="echo"))
            assert reply.WhichOneof("result") == "success", reply
            sums[0] += reply.success.metrics.input_tokens
            sums[1] += reply.success.metrics.output_tokens

    try:
        await asyncio.gather(*(worker(stubs[i % len(stubs)]) for i in range(CONCURRENCY)))
    finally:
        for channel in channels:
            await channel.close(None)
    return sums[0], sums[1]


async def _run_then_terminate(tmp_path: Path, ledger: dict[str, Any]) -> tuple[int, int]:
    config = tmp_path / "proxy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"port": 0, "grace_period_seconds": 5},
                "auth": {"enabled": False},
                "ledger": {**HELD_BACK, **ledger},
            }
        )
    )
    process = _spawn(config)
    seen: list[str] = []
    try:
        port = _port_of(process, seen)
        # Read all along: 5,000 request log lines would fill the pipe and stall the server.
        assert process.stderr is not None
        reader = asyncio.ensure_future(asyncio.to_thread(process.stderr.read))
        sums = await _send_all(port)
        process.send_signal(signal.SIGTERM)
        rest = await reader
        assert await asyncio.to_thread(process.wait, 30) == 0, rest[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert f"{REQUESTS} rows written, 0 dropped" in rest, rest[-2000:]
    assert "Traceback" not in rest
    assert " ERROR " not in rest
    return sums


async def test_sqlite_ledger_has_every_row_after_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    sums = await _run_then_terminate(tmp_path, {"path": str(path)})
    with sqlite3.connect(path) as connection:
        count, inputs, outputs, ok = connection.execute(
            "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(outcome = 'ok') FROM usage"
        ).fetchone()
    assert (count, ok) == (REQUESTS, REQUESTS)
    assert (inputs, outputs) == sums


async def test_postgres_ledger_has_every_row_after_sigterm(
    tmp_path: Path, postgres_dsn: str
) -> None:
    await migrate(postgres_dsn)
    sums = await _run_then_terminate(
        tmp_path, {"backend": "postgres", "postgres_dsn": postgres_dsn}
    )
    connection = await asyncpg.connect(postgres_dsn)
    try:
        row = await connection.fetchrow(
            "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), "
            "COUNT(DISTINCT request_id) FROM llm_proxy_usage"
        )
    finally:
        await connection.close()
    assert (row[0], row[3]) == (REQUESTS, REQUESTS)
    assert (row[1], row[2]) == sums
