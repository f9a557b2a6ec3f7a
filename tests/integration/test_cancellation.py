"""A client that goes away must stop the upstream model call, promptly."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.integration.conftest import Proxy
from tests.integration.helpers import read_chunk, request, script
from tests.support import scripted_models


async def _wait_for(condition: object, timeout: float = 2.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if callable(condition) and condition():
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.mark.parametrize("model", ["scripted", "scripted-async"])
async def test_cancelled_stream_stops_the_model(proxy: Proxy, model: str) -> None:
    probe_name = f"cancel-stream-{model}"
    chunks = [f"c{i} " for i in range(100)]
    call = proxy.stub.StreamExecute(
        request(script(chunks=chunks, delay=0.05, probe=probe_name), model=model)
    )
    first = await read_chunk(call)
    assert first is not None
    assert first.text_chunk == "c0 "
    call.cancel()
    probe = scripted_models.PROBES[probe_name]
    took = await _wait_for(probe.closed.is_set)
    assert took < 1.0
    sent = probe.chunks_sent
    await asyncio.sleep(0.3)
    assert probe.chunks_sent == sent, "the model kept producing after the client left"
    assert sent < len(chunks)
    assert not probe.finished.is_set()


@pytest.mark.parametrize("model", ["scripted", "scripted-async"])
async def test_client_deadline_stops_a_unary_call(proxy: Proxy, model: str) -> None:
    probe_name = f"deadline-{model}"
    # A sync model can only be stopped between chunks, so the script produces slow chunks.
    slow = script(chunks=[f"d{i}" for i in range(100)], delay=0.05, probe=probe_name)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await proxy.stub.Execute(request(slow, model=model), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    probe = scripted_models.PROBES[probe_name]
    await _wait_for(probe.closed.is_set)
    assert not probe.finished.is_set()
    assert probe.chunks_sent < 100
