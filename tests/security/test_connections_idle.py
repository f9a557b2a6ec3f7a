"""Issue 10 item 2: connections nobody uses are closed after server.max_connection_idle_seconds,
so idle clients cannot hold the server's file descriptors; busy connections are left alone,
and an aged connection's calls in flight get their grace period."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import collect, request, script
from tests.security.h2client import RawConnection
from tests.security.served import Served, serve

IDLE = {"server": {"max_connection_idle_seconds": 1.0}}


async def test_idle_connections_get_goaway_and_are_closed(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(IDLE)
    connections = [RawConnection(proxy.address) for _ in range(20)]
    try:
        for connection in connections:
            await asyncio.to_thread(connection.handshake)
        started = time.monotonic()
        closed = await asyncio.gather(
            *(asyncio.to_thread(connection.wait_closed, 15) for connection in connections)
        )
        elapsed = time.monotonic() - started
    finally:
        for connection in connections:
            connection.close()

    assert all(closed)
    # gRPC's own wording; the error code it sends for an idle connection varies by version.
    reasons = [c.goaway.additional_data if c.goaway else None for c in connections]
    assert reasons == [b"connection idle"] * len(connections)
    assert elapsed < 10


async def test_a_connection_with_a_call_in_progress_is_not_idle(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(IDLE)
    stub = proxy.stub
    # Three seconds of streaming on a connection whose idle limit is one second.
    chunks = await collect(
        stub.StreamExecute(request(script(chunks=["a "] * 6, delay=0.5), model="scripted"))
    )

    assert [chunk.text_chunk for chunk in chunks if chunk.text_chunk] == ["a "] * 6
    assert chunks[-1].WhichOneof("chunk_type") == "complete"
    # The client's channel reconnects by itself after the idle GOAWAY.
    await asyncio.sleep(2.5)
    reply = await stub.Execute(request("again", model="echo"), timeout=10)
    assert reply.WhichOneof("result") == "success"


async def test_an_aged_connection_lets_its_call_finish(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(
        {
            "server": {
                "max_connection_age_seconds": 0.5,
                "max_connection_age_grace_seconds": 10,
            }
        }
    )
    chunks = await collect(
        proxy.stub.StreamExecute(request(script(chunks=["b "] * 6, delay=0.4), model="scripted"))
    )

    assert [chunk.text_chunk for chunk in chunks if chunk.text_chunk] == ["b "] * 6
    assert chunks[-1].WhichOneof("chunk_type") == "complete"


async def test_idle_connections_past_the_fd_limit_do_not_lock_clients_out(
    tmp_path: Path,
) -> None:
    config = "server:\n  port: 0\n  max_connection_idle_seconds: 1\nauth:\n  enabled: false\n"
    with serve(config, tmp_path, open_files=(128, 160)) as served:
        await _hold_idle_connections_and_call(served)
    # The server raised its own soft limit to the hard one, and said that is too low.
    assert "open-file limit 160" in served.log
    assert "the open-file limit is 160 (hard limit 160)" in served.log
    assert "Traceback" not in served.log


async def _hold_idle_connections_and_call(served: Served) -> None:
    address = served.address
    # More idle connections than the server has descriptors; the attacker never closes them.
    hoard: list[RawConnection] = []
    try:
        for _ in range(200):
            try:
                hoard.append(RawConnection(address, timeout=2))
            except OSError:
                break
        started = time.monotonic()
        answered = False
        while not answered and time.monotonic() - started < 30:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.VibectlLLMProxyStub(channel)
                try:
                    reply = await stub.Execute(request("hi", model="echo"), timeout=3)
                    answered = reply.WhichOneof("result") == "success"
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.5)
        recovered_s = time.monotonic() - started
    finally:
        for connection in hoard:
            connection.close()

    print(f"held {len(hoard)} idle connections; a real client got through after {recovered_s:.1f}s")
    assert answered, "a real client never got through while idle connections were held"
    assert recovered_s < 20
    assert served.process.poll() is None
