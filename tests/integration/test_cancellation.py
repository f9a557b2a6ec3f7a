"""A client that goes away must stop the upstream model call, promptly."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.integration.conftest import Proxy
from tests.integration.helpers import read_chunk, request, script
from tests.support import scripted_models


async def _stopped_within(probe: scripted_models.Probe, seconds: float) -> None:
    """Waits for the model's generator to be closed (set on the model's thread as it exits:
    nothing is produced after it) and that it was not allowed to finish."""
    closed = await asyncio.to_thread(probe.closed.wait, seconds)
    assert closed, f"the model was still running {seconds}s after the client left"
    assert not probe.finished.is_set()


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
    await _stopped_within(probe, 1.0)
    assert probe.chunks_sent < len(chunks)


@pytest.mark.parametrize("model", ["scripted", "scripted-async"])
async def test_client_deadline_stops_a_unary_call(proxy: Proxy, model: str) -> None:
    probe_name = f"deadline-{model}"
    # A sync model can only be stopped between chunks, so the script produces slow chunks.
    slow = script(chunks=[f"d{i}" for i in range(100)], delay=0.05, probe=probe_name)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await proxy.stub.Execute(request(slow, model=model), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    probe = scripted_models.PROBES[probe_name]
    await _stopped_within(probe, 2.0)
    assert probe.chunks_sent < 100
