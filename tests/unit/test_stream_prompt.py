"""StreamPrompt: chunks as the model produces them, then one terminal event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from application._common import DEADLINE_BACKSTOP_S
from application.stream_prompt import OpenedStream
from domain.answer import Failure, StreamEvent, StreamFinished, TextChunk
from domain.errors import ProxyError, SchemaInvalid, UpstreamFailure, UpstreamTimeout
from domain.outcome import Method
from domain.policy import Limits
from domain.principal import CallContext, Principal
from domain.request import JsonObject, PromptRequest
from domain.usage import ModelPrice, Usage
from tests.unit.fakes import DEFAULT_NOW, HANG, Advance, Harness, Raise, Sleep, prompt_request


@pytest.fixture
def h() -> Harness:
    return Harness()


ANON = CallContext()


def request(
    *user: str, model: str | None = None, schema: JsonObject | None = None, request_id: str = ""
) -> PromptRequest:
    return prompt_request(*user, model=model, schema=schema, request_id=request_id)


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


async def run(h: Harness, req: PromptRequest, context: CallContext = ANON) -> list[StreamEvent]:
    return await collect(h.stream(req, context).events)


def finished(event: StreamEvent) -> StreamFinished:
    assert isinstance(event, StreamFinished), f"expected StreamFinished, got {event!r}"
    return event


def failed(event: StreamEvent) -> Failure:
    assert isinstance(event, Failure), f"expected a Failure, got {event!r}"
    return event


# --------------------------------------------------------------------------- success


async def test_chunks_then_finished_with_usage_from_the_report(h: Harness) -> None:
    h.script("Hel", Advance(0.5), "lo", Usage(input_tokens=7, output_tokens=2))
    h.set_prices({"small": ModelPrice(input_per_million=1.0, output_per_million=10.0)})

    events = await run(h, request("hi", model="fast"))

    assert events[:2] == [TextChunk("Hel"), TextChunk("lo")]
    assert len(events) == 3
    end = finished(events[2])
    assert end.model_id == "small"
    assert end.metrics.duration_ms == 500
    assert end.metrics.timestamp == int(DEFAULT_NOW + 0.5)
    assert end.metrics.usage == Usage(input_tokens=7, output_tokens=2)
    assert end.metrics.usage.total_tokens == 9
    assert end.metrics.cost_usd == pytest.approx((7 * 1.0 + 2 * 10.0) / 1_000_000)
    call = h.gateway.last_call
    assert call.method == "stream"
    assert call.invocation.model_id == "small"
    assert call.finished
    assert call.closed


async def test_without_a_usage_report_usage_and_cost_are_empty(h: Harness) -> None:
    h.script("a")
    h.set_prices({"echo": ModelPrice(1.0, 1.0)})

    end = finished((await run(h, request("hi")))[-1])

    assert end.metrics.usage == Usage()
    assert end.metrics.cost_usd is None


async def test_cost_is_none_without_a_price(h: Harness) -> None:
    h.script("a", Usage(input_tokens=1, output_tokens=1))

    end = finished((await run(h, request("hi")))[-1])

    assert end.metrics.usage.total_tokens == 2
    assert end.metrics.cost_usd is None


async def test_a_stream_without_chunks_still_finishes(h: Harness) -> None:
    h.script(Usage(input_tokens=1, output_tokens=0))

    events = await run(h, request("hi"))

    assert len(events) == 1
    assert finished(events[0]).metrics.usage == Usage(input_tokens=1, output_tokens=0)
    record = h.observer.only()
    assert record.chunks == 0
    assert record.first_chunk_s is None


async def test_record_counts_chunks_and_time_to_first_chunk(h: Harness) -> None:
    h.script(Advance(0.2), "a", Advance(0.3), "b", "c", Usage(input_tokens=4, output_tokens=3))
    h.set_prices({"echo": ModelPrice(1_000_000.0, 1_000_000.0)})

    await run(h, request("hi", request_id="s-1"), CallContext(Principal("bob")))

    h.observer.only_with(
        method=Method.STREAM,
        transport="unspecified",
        request_id="s-1",
        subject="bob",
        model_id="echo",
        outcome="ok",
        chunks=3,
        first_chunk_s=pytest.approx(0.2),
        duration_s=pytest.approx(0.5),
        usage=Usage(input_tokens=4, output_tokens=3),
        cost_usd=pytest.approx(7.0),
    )


async def test_schema_reaches_the_gateway(h: Harness) -> None:
    await run(h, request("hi", model="large", schema={"type": "object"}))

    assert h.gateway.last_call.invocation.schema == {"type": "object"}


# --------------------------------------------------------------------------- request ids


async def test_request_id_is_echoed(h: Harness) -> None:
    opened = h.stream(request("hi", request_id="mine"), ANON)

    assert opened.request_id == "mine"
    await collect(opened.events)
    assert h.ids.issued == []
    assert h.observer.only().request_id == "mine"


async def test_request_id_is_generated_before_the_first_event(h: Harness) -> None:
    opened = h.stream(request("hi"), ANON)

    assert opened.request_id == "req-1"
    assert h.gateway.calls == []  # nothing runs until the stream is consumed
    await collect(opened.events)
    assert h.observer.only().request_id == "req-1"


async def test_failures_carry_the_request_id(h: Harness) -> None:
    events = await run(h, request("", request_id="bad-1"))

    assert failed(events[0]).request_id == "bad-1"


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("req", "context", "code"),
    [
        (request(), ANON, "EMPTY_REQUEST"),
        (request("hi", model="nope"), ANON, "MODEL_NOT_FOUND"),
        (request("hi", model="echo", schema={"type": "object"}), ANON, "INVALID_SCHEMA"),
        (request("hi", model="large", schema={"type": 1}), ANON, "INVALID_SCHEMA"),
        (
            PromptRequest(messages=(), rejection=SchemaInvalid("not valid JSON")),
            ANON,
            "INVALID_SCHEMA",
        ),
        (request("x" * 11), ANON, "INPUT_TOO_LONG"),
    ],
)
async def test_refused_requests_yield_one_failure_and_never_call_the_model(
    h: Harness, req: PromptRequest, context: CallContext, code: str
) -> None:
    h.set_limits(Limits(max_input_length=10))

    events = await run(h, req, context)

    assert len(events) == 1
    assert failed(events[0]).error.code == code
    assert h.gateway.calls == []
    record = h.observer.only()
    assert record.outcome == code
    assert record.chunks == 0


async def test_a_model_outside_the_claim_is_refused_as_unknown_and_booked_as_denied(
    h: Harness,
) -> None:
    context = CallContext(Principal("eve", allowed_models=("small", "e*")))

    events = await run(h, request("hi", model="large"), context)

    assert len(events) == 1
    assert failed(events[0]).error.code == "MODEL_NOT_FOUND"
    assert h.gateway.calls == []
    assert h.observer.only().outcome == "PERMISSION_DENIED"


async def test_an_allowed_principal_streams(h: Harness) -> None:
    context = CallContext(Principal("eve", allowed_models=("small", "e*")))

    events = await run(h, request("hi"), context)

    assert finished(events[-1]).model_id == "echo"


# --------------------------------------------------------------------------- errors mid-stream


async def test_error_mid_stream_ends_with_a_failure_and_nothing_after(h: Harness) -> None:
    error = UpstreamFailure("connection reset", details="peer=acme")
    h.script("a", "b", Raise(error), "never", Usage(input_tokens=1, output_tokens=1))

    events = await run(h, request("hi", request_id="m-1"))

    assert events[:2] == [TextChunk("a"), TextChunk("b")]
    assert len(events) == 3
    end = failed(events[2])
    assert end.error is error
    assert end.request_id == "m-1"
    assert h.gateway.last_call.closed
    assert not h.gateway.last_call.finished
    record = h.observer.only()
    assert record.outcome == "UPSTREAM_ERROR"
    assert record.chunks == 2
    assert record.model_id == "echo"


async def test_any_proxy_error_keeps_its_code(h: Harness) -> None:
    class Custom(ProxyError):
        code = "CUSTOM_CODE"

    h.script(Raise(Custom("odd")))

    events = await run(h, request("hi"))

    assert [failed(e).error.code for e in events] == ["CUSTOM_CODE"]


async def test_unexpected_exception_propagates_and_is_recorded(h: Harness) -> None:
    h.script("a", Raise(RuntimeError("bug")))
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async for event in h.stream(request("hi"), ANON).events:
            seen.append(event)

    with pytest.raises(RuntimeError, match="bug"):
        await consume()

    assert seen == [TextChunk("a")]
    assert h.gateway.last_call.closed
    h.observer.only_with(outcome="INTERNAL_ERROR", chunks=1)


# --------------------------------------------------------------------------- time


async def test_timeout_while_waiting_for_the_model(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=0.05))
    h.script("a", Sleep(30), "b")

    began = time.monotonic()
    events = await run(h, request("hi"))

    assert time.monotonic() - began < 5
    assert events[0] == TextChunk("a")
    assert len(events) == 2
    error = failed(events[1]).error
    assert isinstance(error, UpstreamTimeout)
    assert error.code == "TIMEOUT"
    assert error.seconds == pytest.approx(0.05)
    assert h.gateway.last_call.cancelled
    assert h.gateway.last_call.closed
    h.observer.only_with(outcome="TIMEOUT", chunks=1)


async def test_timeout_bounds_the_whole_stream_not_each_chunk(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=5))
    # Model time passes on the fake clock: after the second chunk the 5 s budget is spent.
    h.script("a", Advance(10), "b", Sleep(30), "c")

    began = time.monotonic()
    events = await run(h, request("hi"))

    assert time.monotonic() - began < 4
    assert events[:2] == [TextChunk("a"), TextChunk("b")]
    assert isinstance(failed(events[2]).error, UpstreamTimeout)


async def test_the_timeout_does_not_run_while_the_consumer_is_busy(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=0.05))
    h.script("a", "b", Usage(input_tokens=1, output_tokens=1))
    events: list[StreamEvent] = []

    async for event in h.stream(request("hi"), ANON).events:
        events.append(event)
        await asyncio.sleep(0.12)  # a slow client, longer than the model timeout

    assert events[:2] == [TextChunk("a"), TextChunk("b")]
    assert finished(events[2]).metrics.usage.total_tokens == 2


async def test_client_deadline_shortens_the_timeout(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=300))
    h.script(Sleep(30))

    began = time.monotonic()
    events = await run(h, request("hi"), CallContext(time_remaining=0.05))

    assert time.monotonic() - began < 5
    error = failed(events[0]).error
    assert isinstance(error, UpstreamTimeout)
    assert error.seconds == pytest.approx(0.05 + DEADLINE_BACKSTOP_S)


# --------------------------------------------------------------------------- cancellation


async def test_cancelling_the_consumer_cancels_the_model_and_is_recorded(h: Harness) -> None:
    h.script("a", HANG, "b")
    seen: list[StreamEvent] = []
    opened: OpenedStream = h.stream(request("hi", request_id="c-1"), ANON)

    async def consume() -> None:
        async for event in opened.events:
            seen.append(event)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(h.gateway.hanging.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert seen == [TextChunk("a")]
    call = h.gateway.last_call
    assert call.cancelled
    assert call.closed
    record = h.observer.only()
    assert record.outcome == "CANCELLED"
    assert record.request_id == "c-1"
    assert record.chunks == 1


async def test_a_consumer_that_stops_early_closes_the_model_stream(h: Harness) -> None:
    h.script("a", "b", "c")
    events = h.stream(request("hi"), ANON).events
    assert isinstance(events, AsyncIterator)

    first = await anext(events)
    aclose = getattr(events, "aclose", None)
    assert aclose is not None, "the event stream must be closable"
    await aclose()

    assert first == TextChunk("a")
    assert h.gateway.last_call.closed
    assert not h.gateway.last_call.finished
    record = h.observer.only()
    assert record.outcome == "CANCELLED"
    assert record.chunks == 1


async def test_leaving_the_stream_block_early_ends_the_request_at_once(h: Harness) -> None:
    h.script("a", "b", "c")

    async with h.stream(request("hi"), ANON) as events:
        first = await anext(events)
        # Stopping here is what a transport does when it fails to send a chunk.

    assert first == TextChunk("a")
    assert h.gateway.last_call.closed
    assert h.observer.in_flight == 0
    record = h.observer.only()
    assert record.outcome == "CANCELLED"


@pytest.mark.parametrize(
    ("script", "limits", "context", "code"),
    [
        (("a",), Limits(), CallContext(Principal("eve", allowed_models=("echo",))), "PERMISSION"),
        (("a",), Limits(max_input_length=1), ANON, "INPUT_TOO_LONG"),
        (("a", Raise(UpstreamFailure("boom"))), Limits(), ANON, "UPSTREAM_ERROR"),
        (("a", Usage()), Limits(), ANON, "ok"),
    ],
)
async def test_the_request_is_recorded_before_its_last_event_is_handed_over(
    h: Harness, script: tuple[Any, ...], limits: Limits, context: CallContext, code: str
) -> None:
    """A transport may abandon the stream on its last event (grpc aborts a refused call by
    raising) without ever closing it; the record must not wait for that."""
    h.script(*script)
    h.set_limits(limits)
    events = h.stream(request("hi", model="small"), context).events

    last: StreamEvent | None = None
    async for event in events:
        if isinstance(event, StreamFinished | Failure):
            last = event
            break

    assert last is not None
    assert h.observer.in_flight == 0
    assert h.observer.only().outcome.startswith(code)
