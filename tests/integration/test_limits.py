"""Configured limits are enforced over the wire with RESOURCE_EXHAUSTED and a retry-after."""

from __future__ import annotations

from typing import cast

import grpc
import pytest

from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import collect, read_chunk, request, script


async def test_rate_limit_rejects_with_retry_after(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"limits": {"max_requests_per_minute": 3}})
    for _ in range(3):
        reply = await proxy.stub.Execute(request("hi", model="echo"))
        assert reply.WhichOneof("result") == "success"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await proxy.stub.Execute(request("hi", model="echo"))
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 requests per minute" in (error.details() or "")
    # grpc-stubs types metadata items opaquely; at run time they are (key, value) pairs.
    trailers = cast("list[tuple[str, str]]", list(error.trailing_metadata() or ()))
    retry_after = [value for key, value in trailers if key == "retry-after"]
    assert len(retry_after) == 1
    # At most 3 in any minute: room again when the first of the three is a minute old.
    assert 50 < float(retry_after[0]) <= 60


async def test_concurrency_limit_rejects_while_full_and_recovers(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy({"limits": {"max_concurrent_requests": 1}})
    slow = proxy.stub.StreamExecute(
        request(script(chunks=["a", "b", "c"], delay=0.2), model="scripted-async")
    )
    assert await read_chunk(slow) is not None
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(proxy.stub.StreamExecute(request("hi", model="echo")))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    while await read_chunk(slow) is not None:
        pass
    reply = await proxy.stub.Execute(request("after", model="echo"))
    assert reply.WhichOneof("result") == "success"
    assert proxy.container.admission().in_flight == 0
