"""Idle clients that ping (vibectl pings every 30 s) must keep their connection.

Time is scaled down: the server's minimum ping interval and the client's ping period are both
set to 1 s, which exercises the same HTTP/2 policy as 10 s vs 30 s without a long test. The
control case proves the check can fail: a server that only tolerates rare pings does drop the
same client.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.conftest import ProxyFactory

PINGING_CLIENT = [
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


async def _transitions_while_idle(address: str, idle_s: float) -> list[grpc.ChannelConnectivity]:
    async with grpc.aio.insecure_channel(address, options=PINGING_CLIENT) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        await stub.GetServerInfo(pb.GetServerInfoRequest())
        seen: list[grpc.ChannelConnectivity] = []

        async def watch() -> None:
            state = channel.get_state()
            while True:
                await channel.wait_for_state_change(state)
                state = channel.get_state()
                seen.append(state)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(idle_s)
        watcher.cancel()
        await stub.GetServerInfo(pb.GetServerInfoRequest())
        return seen


async def test_pinging_idle_client_is_not_disconnected(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"server": {"min_ping_interval_seconds": 1}})
    transitions = await _transitions_while_idle(proxy.address, idle_s=6)
    assert transitions == [], f"connection was dropped: {transitions}"


@pytest.mark.slow
async def test_control_a_strict_server_does_drop_the_same_client(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy({"server": {"min_ping_interval_seconds": 60}})
    transitions = await _transitions_while_idle(proxy.address, idle_s=6)
    assert transitions, "expected the strict server to send GOAWAY for too many pings"
