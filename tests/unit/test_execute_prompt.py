"""ExecutePrompt: one whole answer per request, driven through in-memory fakes."""

from __future__ import annotations

import asyncio
import time

import pytest

from application._common import DEADLINE_BACKSTOP_S
from domain.answer import Answer, Failure
from domain.errors import (
    InputTooLong,
    ModelUnavailable,
    ProxyError,
    SchemaInvalid,
    UnknownModel,
    UpstreamFailure,
    UpstreamTimeout,
)
from domain.outcome import Method
from domain.policy import Limits
from domain.principal import CallContext, Principal
from domain.request import JsonObject, Message, PromptRequest, Role
from domain.usage import ModelPrice, Usage
from tests.unit.fakes import DEFAULT_NOW, HANG, Advance, Harness, Raise, Sleep, prompt_request


@pytest.fixture
def h() -> Harness:
    return Harness()


def request(
    *user: str,
    system: tuple[str, ...] = (),
    model: str | None = None,
    schema: JsonObject | None = None,
    request_id: str = "",
) -> PromptRequest:
    return prompt_request(*user, system=system, model=model, schema=schema, request_id=request_id)


ANON = CallContext()


def answer(result: Answer | Failure) -> Answer:
    assert isinstance(result, Answer), f"expected an answer, got {result!r}"
    return result


def failure(result: Answer | Failure) -> Failure:
    assert isinstance(result, Failure), f"expected a failure, got {result!r}"
    return result


# --------------------------------------------------------------------------- success


async def test_success_returns_text_model_and_metrics(h: Harness) -> None:
    h.script("Hel", Advance(0.25), "lo", Usage(input_tokens=10, output_tokens=5))
    h.set_prices({"echo": ModelPrice(input_per_million=2.0, output_per_million=4.0)})

    result = answer(await h.execute(request("hi", request_id="abc"), ANON))

    assert result.text == "Hello"
    assert result.model_id == "echo"
    assert result.request_id == "abc"
    metrics = result.metrics
    assert metrics.duration_ms == 250
    assert metrics.timestamp == int(DEFAULT_NOW + 0.25)
    assert metrics.usage == Usage(input_tokens=10, output_tokens=5)
    assert metrics.usage.total_tokens == 15
    assert metrics.cost_usd == pytest.approx((10 * 2.0 + 5 * 4.0) / 1_000_000)
    assert metrics.retry_count == 0


async def test_cost_is_none_without_a_price_for_the_model(h: Harness) -> None:
    h.script("x", Usage(input_tokens=10, output_tokens=5))
    h.set_prices({"small": ModelPrice(1.0, 1.0)})

    result = answer(await h.execute(request("hi"), ANON))

    assert result.metrics.usage.total_tokens == 15
    assert result.metrics.cost_usd is None
    assert h.observer.only().cost_usd is None


async def test_cost_is_none_when_the_model_reports_no_usage(h: Harness) -> None:
    h.script("x")
    h.set_prices({"echo": ModelPrice(1.0, 1.0)})

    result = answer(await h.execute(request("hi"), ANON))

    assert result.metrics.usage == Usage()
    assert result.metrics.usage.total_tokens is None
    assert result.metrics.cost_usd is None


async def test_success_is_recorded_once(h: Harness) -> None:
    h.script("ok", Advance(1.5), Usage(input_tokens=3, output_tokens=4))
    h.set_prices({"echo": ModelPrice(1_000_000.0, 0.0)})

    await h.execute(request("hi", request_id="r-9"), CallContext(Principal("alice")))

    h.observer.only_with(
        method=Method.UNARY,
        transport="unspecified",
        request_id="r-9",
        subject="alice",
        model_id="echo",
        outcome="ok",
        duration_s=pytest.approx(1.5),
        usage=Usage(input_tokens=3, output_tokens=4),
        cost_usd=pytest.approx(3.0),
    )


async def test_messages_reach_the_gateway_unchanged(h: Harness) -> None:
    await h.execute(request("one", "two", system=("be brief",)), ANON)

    invocation = h.gateway.last_call.invocation
    assert invocation.messages == (
        Message.of_text(Role.SYSTEM, "be brief"),
        Message.of_text(Role.USER, "one", "two"),
    )
    assert invocation.schema is None
    assert h.gateway.last_call.method == "complete"


# --------------------------------------------------------------------------- request ids


async def test_request_id_is_echoed(h: Harness) -> None:
    result = answer(await h.execute(request("hi", request_id="client-42"), ANON))

    assert result.request_id == "client-42"
    assert h.ids.issued == []


async def test_request_id_is_generated_when_missing(h: Harness) -> None:
    first = await h.execute(request("hi"), ANON)
    second = await h.execute(request("hi"), ANON)

    assert first.request_id == "req-1"
    assert second.request_id == "req-2"
    assert [r.request_id for r in h.observer.records] == ["req-1", "req-2"]


async def test_failures_carry_the_request_id_too(h: Harness) -> None:
    result = failure(await h.execute(request(""), ANON))

    assert result.request_id == "req-1"


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("small", "small"),
        ("large", "large"),
        ("fast", "small"),
        ("big", "large"),
        (None, "echo"),
        ("", "echo"),
        ("   ", "echo"),
        (" small ", "small"),
    ],
)
async def test_model_resolution(h: Harness, requested: str | None, expected: str) -> None:
    result = answer(await h.execute(request("hi", model=requested), ANON))

    assert result.model_id == expected
    assert h.gateway.last_call.invocation.model_id == expected


async def test_unknown_model_fails_and_lists_every_name(h: Harness) -> None:
    result = failure(await h.execute(request("hi", model="gpt-9"), ANON))

    error = result.error
    assert isinstance(error, UnknownModel)
    assert error.code == "MODEL_NOT_FOUND"
    assert error.requested == "gpt-9"
    assert error.available == ("echo", "large", "small", "big", "fast")
    for name in ("'gpt-9'", "echo", "small", "large", "fast", "big"):
        assert name in error.message
    assert h.gateway.calls == []
    record = h.observer.only()
    assert record.outcome == "MODEL_NOT_FOUND"
    assert record.model_id is None


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("user", [(), ("",), ("  ", "\n\t")])
async def test_empty_request(h: Harness, user: tuple[str, ...]) -> None:
    result = failure(await h.execute(request(*user, system=("a system prompt",)), ANON))

    assert result.error.code == "EMPTY_REQUEST"
    assert h.gateway.calls == []
    assert h.observer.only().outcome == "EMPTY_REQUEST"


async def test_input_limit_counts_every_fragment_including_system(h: Harness) -> None:
    h.set_limits(Limits(max_input_length=10))

    result = failure(await h.execute(request("abc", "de", system=("fghij", "k")), ANON))

    error = result.error
    assert isinstance(error, InputTooLong)
    assert error.code == "INPUT_TOO_LONG"
    assert (error.length, error.limit) == (11, 10)
    assert "11" in error.message
    assert "10" in error.message
    assert h.gateway.calls == []


async def test_input_exactly_at_the_limit_is_accepted(h: Harness) -> None:
    h.set_limits(Limits(max_input_length=10))

    result = await h.execute(request("abc", "de", system=("fghij",)), ANON)

    assert isinstance(result, Answer)


async def test_no_input_limit_when_none(h: Harness) -> None:
    h.set_limits(Limits(max_input_length=None))

    assert isinstance(await h.execute(request("x" * 2_000_000), ANON), Answer)


@pytest.mark.parametrize("schema", [{"type": 5}, {"type": {"nested": True}}], ids=str)
async def test_invalid_schema(h: Harness, schema: JsonObject) -> None:
    result = failure(await h.execute(request("hi", model="large", schema=schema), ANON))

    assert result.error.code == "INVALID_SCHEMA"
    assert '"type"' in result.error.message
    assert h.gateway.calls == []
    assert h.observer.only().outcome == "INVALID_SCHEMA"


async def test_schema_reaches_the_gateway(h: Harness) -> None:
    schema: JsonObject = {"type": "object", "properties": {"name": {"type": "string"}}}

    await h.execute(request("hi", model="large", schema=schema), ANON)

    assert h.gateway.last_call.invocation.schema == schema


@pytest.mark.parametrize("schema", [{"type": ["object", "null"]}, {"properties": {}}], ids=str)
async def test_schema_type_may_be_a_list_or_absent(h: Harness, schema: JsonObject) -> None:
    assert isinstance(await h.execute(request("hi", model="large", schema=schema), ANON), Answer)


async def test_a_schema_for_a_model_without_structured_output_names_those_with_it(
    h: Harness,
) -> None:
    result = failure(await h.execute(request("hi", model="echo", schema={}), ANON))

    assert result.error.code == "INVALID_SCHEMA"
    assert result.error.message.endswith("Served models that can: large")
    assert h.gateway.calls == []


async def test_a_transport_rejection_is_refused_and_recorded_without_calling_the_model(
    h: Harness,
) -> None:
    rejected = PromptRequest(
        messages=(),
        request_id="bad-json",
        rejection=SchemaInvalid("response_model_schema is not valid JSON"),
    )

    result = failure(await h.execute(rejected, ANON))

    assert (result.request_id, result.error.code) == ("bad-json", "INVALID_SCHEMA")
    assert h.gateway.calls == []
    record = h.observer.only()
    # Recorded against the model it named (here the default), like any content refusal.
    assert (record.request_id, record.outcome, record.model_id) == (
        "bad-json",
        "INVALID_SCHEMA",
        "echo",
    )


# --------------------------------------------------------------------------- gateway errors


@pytest.mark.parametrize(
    "error",
    [
        UpstreamFailure("the provider said 500", details="status=500"),
        ModelUnavailable("no API key for acme"),
        ProxyError("something odd"),
    ],
)
async def test_gateway_proxy_error_becomes_a_failure_with_its_code(
    h: Harness, error: ProxyError
) -> None:
    h.script("partial", Raise(error))

    result = failure(await h.execute(request("hi", request_id="r1"), ANON))

    assert result.error is error
    assert result.request_id == "r1"
    record = h.observer.only()
    assert record.outcome == error.code
    assert record.model_id == "echo"


async def test_unexpected_gateway_exception_propagates_and_is_recorded(h: Harness) -> None:
    h.script(Raise(RuntimeError("bug")))

    with pytest.raises(RuntimeError, match="bug"):
        await h.execute(request("hi"), ANON)

    assert h.observer.only().outcome == "INTERNAL_ERROR"


# --------------------------------------------------------------------------- time


async def test_timeout_becomes_an_upstream_timeout_failure(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=0.05))
    h.script(Sleep(30))

    began = time.monotonic()
    result = failure(await h.execute(request("hi"), ANON))

    assert time.monotonic() - began < 5
    error = result.error
    assert isinstance(error, UpstreamTimeout)
    assert error.code == "TIMEOUT"
    assert error.seconds == pytest.approx(0.05)
    assert "request_timeout_seconds" in error.message
    assert h.gateway.last_call.cancelled
    assert not h.gateway.last_call.finished
    assert h.observer.only().outcome == "TIMEOUT"


async def test_client_deadline_shortens_the_timeout(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=300))
    h.script(Sleep(30))

    began = time.monotonic()
    result = failure(await h.execute(request("hi"), CallContext(time_remaining=0.05)))

    assert time.monotonic() - began < 5
    assert isinstance(result.error, UpstreamTimeout)
    assert result.error.seconds == pytest.approx(0.05 + DEADLINE_BACKSTOP_S)


async def test_limit_wins_over_a_longer_client_deadline(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=0.05))
    h.script(Sleep(30))

    result = failure(await h.execute(request("hi"), CallContext(time_remaining=100.0)))

    assert isinstance(result.error, UpstreamTimeout)
    assert result.error.seconds == pytest.approx(0.05)


async def test_expired_client_deadline_times_out_at_once(h: Harness) -> None:
    h.script(Sleep(30))

    result = failure(await h.execute(request("hi"), CallContext(time_remaining=-1.0)))

    assert isinstance(result.error, UpstreamTimeout)
    assert result.error.seconds == pytest.approx(DEADLINE_BACKSTOP_S)


async def test_a_fast_model_is_not_timed_out(h: Harness) -> None:
    h.set_limits(Limits(request_timeout_seconds=5))
    h.script(Sleep(0.01), "done")

    assert answer(await h.execute(request("hi"), CallContext(time_remaining=5))).text == "done"


async def test_cancellation_propagates_and_reaches_the_gateway(h: Harness) -> None:
    h.script("partial", HANG)
    task = asyncio.create_task(h.execute(request("hi", request_id="c1"), ANON))
    await asyncio.wait_for(h.gateway.hanging.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert h.gateway.last_call.cancelled
    record = h.observer.only()
    assert record.outcome == "CANCELLED"
    assert record.request_id == "c1"
    assert record.model_id == "echo"


# --------------------------------------------------------------------------- permission


@pytest.mark.parametrize(
    ("allowed", "requested"),
    [
        (("small",), "small"),
        (("small",), "fast"),
        (("fast",), "small"),
        (("l*",), "large"),
        (("b?g",), "big"),
        (("nothing", "echo"), None),
    ],
)
async def test_principal_may_use_allowed_models(
    h: Harness, allowed: tuple[str, ...], requested: str | None
) -> None:
    context = CallContext(Principal("alice", allowed_models=allowed))

    assert isinstance(await h.execute(request("hi", model=requested), context), Answer)


@pytest.mark.parametrize(
    ("allowed", "requested"),
    [
        (("small",), "large"),
        (("small",), "big"),
        (("s*",), None),
        ((), "echo"),
        (("SMALL",), "small"),
    ],
)
async def test_principal_is_denied_other_models(
    h: Harness, allowed: tuple[str, ...], requested: str | None
) -> None:
    context = CallContext(Principal("alice", allowed_models=allowed))

    result = failure(await h.execute(request("hi", model=requested), context))

    # Told what a model that does not exist would get (tests/unit/test_visibility.py); the
    # server records the truth.
    assert result.error.code == "MODEL_NOT_FOUND"
    assert "alice" not in result.error.message
    assert h.gateway.calls == []
    record = h.observer.only()
    assert record.outcome == "PERMISSION_DENIED"
    assert record.subject == "alice"
