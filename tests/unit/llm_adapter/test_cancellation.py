"""Cancelling the awaiting task stops the model; slow sync models never block the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest

from adapters.llm import LlmGateway, LlmModelRegistry
from adapters.llm.gateway import MAX_BUFFERED_CHARS
from domain.answer import TextChunk
from domain.errors import ModelUnavailable
from tests.support import scripted_models
from tests.support.scripted_models import Probe
from tests.unit.llm_adapter.helpers import invocation, new_probe_name, script

BOTH = pytest.mark.parametrize("model", ["scripted", "scripted-async"])
TOTAL_CHUNKS = 200
DELAY_S = 0.02


# Generous: only a broken test waits this long; a passing one waits for an event.
EVENT_TIMEOUT_S = 10.0


async def wait_for(event: threading.Event) -> None:
    """Waits for an event set on a model's thread, without blocking the loop."""
    if not await asyncio.to_thread(event.wait, EVENT_TIMEOUT_S):
        pytest.fail(f"not set within {EVENT_TIMEOUT_S}s")


async def wait_until(condition: Callable[[], bool]) -> None:
    """For states no event announces: looks again at every turn of the loop."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {EVENT_TIMEOUT_S}s")
        await asyncio.sleep(0.005)


def slow_script(probe_name: str, **extra: object) -> str:
    return script(chunks=["x"] * TOTAL_CHUNKS, delay=DELAY_S, probe=probe_name, **extra)


async def assert_stopped(probe: Probe) -> None:
    # `closed` is set as the model's generator is closed: nothing is produced after it.
    await wait_for(probe.closed)
    assert 0 < probe.chunks_sent < TOTAL_CHUNKS
    assert not probe.finished.is_set()


@BOTH
async def test_cancelling_a_stream_consumer_stops_the_model(
    gateway: LlmGateway, model: str
) -> None:
    name = new_probe_name()
    received: list[str] = []

    async def consume() -> None:
        async for event in gateway.stream(invocation(model, slow_script(name))):
            if isinstance(event, TextChunk):
                received.append(event.text)

    task = asyncio.create_task(consume())
    await wait_until(lambda: len(received) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_stopped(scripted_models.PROBES[name])


@BOTH
async def test_cancelling_complete_stops_the_model(gateway: LlmGateway, model: str) -> None:
    name = new_probe_name()
    task = asyncio.create_task(gateway.complete(invocation(model, slow_script(name))))
    probe = scripted_models.probe(name)
    await wait_until(lambda: probe.chunks_sent >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await assert_stopped(probe)


@BOTH
async def test_timeout_around_a_stream_stops_the_model(gateway: LlmGateway, model: str) -> None:
    name = new_probe_name()

    async def consume() -> None:
        async for _ in gateway.stream(invocation(model, slow_script(name))):
            pass

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await consume()
    await assert_stopped(scripted_models.PROBES[name])


@BOTH
async def test_closing_the_stream_early_stops_the_model(gateway: LlmGateway, model: str) -> None:
    name = new_probe_name()
    async with aclosing(gateway.stream(invocation(model, slow_script(name)))) as events:
        async for _ in events:
            break
    await assert_stopped(scripted_models.PROBES[name])


@BOTH
async def test_cancelling_a_hanging_model_before_its_first_chunk(
    gateway: LlmGateway, model: str
) -> None:
    name = new_probe_name()
    probe = scripted_models.probe(name)
    task = asyncio.create_task(gateway.complete(invocation(model, slow_script(name, hang=True))))
    await wait_for(probe.started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if model == "scripted":
        # A sync plugin call cannot be interrupted: it stops once it next yields.
        probe.release.set()
    await wait_for(probe.closed)
    assert probe.chunks_sent <= 1


@BOTH
async def test_probe_file_shows_the_run_from_outside(
    gateway: LlmGateway, model: str, tmp_path: Path
) -> None:
    path = tmp_path / "probe.log"
    await gateway.complete(invocation(model, script(chunks=["a", "b"], probe_file=str(path))))
    assert path.read_text().splitlines() == ["started", "chunk 1", "chunk 2", "finished"]


async def test_closing_the_gateway_ends_running_sync_streams(gateway: LlmGateway) -> None:
    name = new_probe_name()
    events = gateway.stream(invocation("scripted", slow_script(name)))
    first = await anext(events)
    assert first == TextChunk("x")
    gateway.close()
    with pytest.raises(ModelUnavailable, match="shutting down"):
        async for _ in events:
            pass
    await assert_stopped(scripted_models.PROBES[name])


async def test_a_running_sync_model_does_not_block_the_event_loop(gateway: LlmGateway) -> None:
    name = new_probe_name()
    probe = scripted_models.probe(name)
    call = invocation("scripted", script(chunks=["x"], hang=True, probe=name))
    task = asyncio.create_task(gateway.complete(call))
    await wait_for(probe.started)
    # The model waits for this loop to release it: a blocked loop would never get here.
    probe.release.set()
    assert (await task).text == "x"


async def test_sync_calls_run_in_parallel_threads(gateway: LlmGateway) -> None:
    names = [new_probe_name() for _ in range(4)]
    tasks = [
        asyncio.create_task(
            gateway.complete(invocation("scripted", script(chunks=["a"], hang=True, probe=name)))
        )
        for name in names
    ]
    # All four are running at once, each on its own thread, before any is let go.
    for name in names:
        await wait_for(scripted_models.probe(name).started)
    for name in names:
        scripted_models.probe(name).release.set()
    assert [output.text for output in await asyncio.gather(*tasks)] == ["a"] * 4


async def test_a_call_cancelled_while_queued_for_a_thread_never_runs(
    registry: LlmModelRegistry,
) -> None:
    gateway = LlmGateway(registry, max_threads=1)
    busy, queued, after = new_probe_name(), new_probe_name(), new_probe_name()
    try:
        blocker = asyncio.create_task(
            gateway.complete(invocation("scripted", script(chunks=["a"], hang=True, probe=busy)))
        )
        await wait_for(scripted_models.probe(busy).started)
        waiting = asyncio.create_task(
            gateway.complete(invocation("scripted", script(chunks=["b"], probe=queued)))
        )
        # Submitting to the pool happens on the task's first steps; let it take them.
        for _ in range(10):
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        scripted_models.probe(busy).release.set()
        assert (await blocker).text == "a"
        # The single thread takes jobs in order: had the cancelled one stayed queued, it
        # would have run before this one.
        later = invocation("scripted", script(chunks=["c"], probe=after))
        assert (await gateway.complete(later)).text == "c"
        assert not scripted_models.probe(queued).started.is_set()
    finally:
        gateway.close()


async def test_a_sync_model_pauses_while_its_reader_does_not_read(gateway: LlmGateway) -> None:
    """Its unread answer waits in a bounded buffer, as an async model waits in its await."""
    name = new_probe_name()
    probe = scripted_models.probe(name)
    chunk = "y" * 1024
    total = 4 * MAX_BUFFERED_CHARS // len(chunk)
    events = gateway.stream(invocation("scripted", script(chunks=[chunk] * total, probe=name)))
    async with aclosing(events):
        assert await anext(events) == TextChunk(chunk)
        # The model fills the buffer, then waits: it is not finished, and it stays paused.
        await wait_until(lambda: probe.chunks_sent >= MAX_BUFFERED_CHARS // len(chunk))
        paused_at = probe.chunks_sent
        assert not probe.finished.is_set()
        # Reading one chunk makes room for about one more, no more than that.
        assert await anext(events) == TextChunk(chunk)
        await wait_until(lambda: probe.chunks_sent > paused_at)
        assert probe.chunks_sent <= paused_at + 2
    # Closing the stream ends the paused model.
    await assert_stopped_at_most(probe, total)


async def assert_stopped_at_most(probe: Probe, total: int) -> None:
    await wait_for(probe.closed)
    assert probe.chunks_sent < total
