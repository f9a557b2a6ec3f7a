"""Cancelling the awaiting task stops the model; slow sync models never block the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest

from adapters.llm import LlmGateway, LlmModelRegistry
from domain.answer import ModelOutput, TextChunk
from domain.errors import ModelUnavailable
from tests.support import scripted_models
from tests.support.scripted_models import Probe
from tests.unit.llm_adapter.helpers import invocation, new_probe_name, script

BOTH = pytest.mark.parametrize("model", ["scripted", "scripted-async"])
TOTAL_CHUNKS = 200
DELAY_S = 0.02


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> float:
    """Seconds it took for `condition` to hold; fails the test if it never does."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def slow_script(probe_name: str, **extra: object) -> str:
    return script(chunks=["x"] * TOTAL_CHUNKS, delay=DELAY_S, probe=probe_name, **extra)


async def assert_stopped(probe: Probe) -> None:
    took = await wait_until(probe.closed.is_set, timeout=0.5)
    assert took < 0.5
    sent = probe.chunks_sent
    await asyncio.sleep(0.1)
    assert probe.chunks_sent == sent, "the model kept producing after it was stopped"
    assert 0 < sent < TOTAL_CHUNKS
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
    await wait_until(probe.started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if model == "scripted":
        # A sync plugin call cannot be interrupted: it stops once it next yields.
        probe.release.set()
    await wait_until(probe.closed.is_set, timeout=0.5)
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


async def test_a_slow_sync_model_does_not_block_the_event_loop(gateway: LlmGateway) -> None:
    gaps: list[float] = []

    async def tick(until: asyncio.Future[ModelOutput]) -> None:
        last = time.monotonic()
        while not until.done():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    # Five chunks of 0.1 s each: a blocked loop would stall the ticker for the whole 0.5 s.
    call = invocation("scripted", script(chunks=["x"] * 5, delay=0.1))
    task = asyncio.create_task(gateway.complete(call))
    await tick(task)
    assert (await task).text == "xxxxx"
    assert len(gaps) > 20
    assert max(gaps) < 0.25


async def test_sync_calls_run_in_parallel_threads(gateway: LlmGateway) -> None:
    call = invocation("scripted", script(chunks=["a", "b"], delay=0.15))
    started = time.monotonic()
    outputs = await asyncio.gather(*(gateway.complete(call) for _ in range(4)))
    assert [output.text for output in outputs] == ["ab"] * 4
    # Serially this would take 4 x 0.3 s.
    assert time.monotonic() - started < 0.9


async def test_a_call_cancelled_while_queued_for_a_thread_never_runs(
    registry: LlmModelRegistry,
) -> None:
    gateway = LlmGateway(registry, max_threads=1)
    busy, queued = new_probe_name(), new_probe_name()
    try:
        blocker = asyncio.create_task(
            gateway.complete(invocation("scripted", script(chunks=["a"], hang=True, probe=busy)))
        )
        await wait_until(scripted_models.probe(busy).started.is_set)
        waiting = asyncio.create_task(
            gateway.complete(invocation("scripted", script(chunks=["b"], probe=queued)))
        )
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        scripted_models.probe(busy).release.set()
        assert (await blocker).text == "a"
        await asyncio.sleep(0.05)
        assert not scripted_models.probe(queued).started.is_set()
    finally:
        gateway.close()
