"""A burst of concurrent prompts over many connections, and what came back."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

import grpc

from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.helpers import request


async def burst(ports: Sequence[int], total: int, connections: int = 20) -> Counter[str]:
    """Sends `total` Execute calls at once, spread over `connections` channels to the servers
    on `ports` in turn; counts "ok" and each status code of the refusals."""
    # A private subchannel pool per channel: otherwise channels to one address share one
    # connection, and `--workers` would see all of them on one worker.
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{ports[index % len(ports)]}",
            options=[("grpc.use_local_subchannel_pool", 1)],
        )
        for index in range(connections)
    ]
    stubs = [pb_grpc.VibectlLLMProxyStub(channel) for channel in channels]

    async def one(index: int) -> str:
        try:
            reply = await stubs[index % len(stubs)].Execute(request("hi", model="echo"))
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "ok" if reply.WhichOneof("result") == "success" else reply.error.error_code

    try:
        return Counter(await asyncio.gather(*(one(index) for index in range(total))))
    finally:
        for channel in channels:
            await channel.close(None)
