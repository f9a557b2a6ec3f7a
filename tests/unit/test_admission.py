"""Admission control: per-caller rate, server-wide concurrency, and release on every path."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import NamedTuple

import pytest

from adapters.quota import MemoryQuotaStore
from adapters.quota.memory import SWEEP_AT
from application.admission import Admission, Reservation
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from domain.answer import Answer, Failure
from domain.errors import Overloaded, RateLimited, SchemaInvalid, SubjectOverloaded
from domain.policy import Limits, ServerPolicy
from domain.principal import CallContext, Principal
from domain.request import PromptRequest
from domain.usage import Usage
from tests.unit.fakes import (
    HANG,
    FakeClock,
    FakePolicySource,
    Harness,
    prompt_request,
    sample_policy,
)


class _Admission:
    """An Admission over an in-memory store, with the policy each request carries."""

    def __init__(self, limits: Limits) -> None:
        self.clock = FakeClock()
        self.limits = limits
        self.store = MemoryQuotaStore()
        self.admission = Admission(self.store, self.clock)
        self._held: dict[str, list[Reservation]] = {}

    async def enter(self, subject: str) -> None:
        reservation = await self.admission.admit(
            Principal(subject), "echo", prompt_request("hi"), sample_policy(limits=self.limits)
        )
        self._held.setdefault(subject, []).append(reservation)

    async def leave(self, subject: str) -> None:
        self.admission.settle(self._held[subject].pop(), Usage(), 0)
        await self.admission.close()

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight


async def test_no_limits_admits_everything() -> None:
    admission = _Admission(Limits(max_concurrent_requests=None, max_requests_per_minute=None))
    for _ in range(1000):
        await admission.enter("alice")
    assert admission.in_flight == 1000


async def test_concurrency_limit_rejects_then_admits_after_leave() -> None:
    admission = _Admission(Limits(max_concurrent_requests=2))
    await admission.enter("a")
    await admission.enter("b")
    with pytest.raises(Overloaded) as caught:
        await admission.enter("c")
    assert caught.value.code == "OVERLOADED"
    assert "2 concurrent" in caught.value.message
    assert caught.value.retry_after_s > 0
    await admission.leave("a")
    await admission.enter("c")
    assert admission.in_flight == 2


async def test_one_caller_gets_half_the_slots_by_default() -> None:
    admission = _Admission(Limits(max_concurrent_requests=10))
    for _ in range(5):
        await admission.enter("greedy")
    with pytest.raises(SubjectOverloaded) as caught:
        await admission.enter("greedy")
    assert caught.value.code == "TOO_MANY_IN_FLIGHT"
    assert "'greedy' already has 5 requests in flight" in caught.value.message
    assert "limits.max_concurrent_per_subject" in caught.value.message
    for other in ("a", "b", "c", "d", "e"):
        await admission.enter(other)
    assert admission.in_flight == 10
    assert admission.admission.in_flight_of("greedy") == 5
    await admission.leave("greedy")
    await admission.leave("a")
    await admission.enter("greedy")
    assert admission.admission.in_flight_of("greedy") == 5


async def test_an_explicit_per_caller_cap_applies_even_without_a_server_wide_one() -> None:
    admission = _Admission(Limits(max_concurrent_per_subject=2))
    await admission.enter("alice")
    await admission.enter("alice")
    with pytest.raises(SubjectOverloaded):
        await admission.enter("alice")
    await admission.enter("bob")
    await admission.leave("alice")
    await admission.enter("alice")
    assert admission.admission.in_flight_of("alice") == 2


@pytest.mark.parametrize(
    ("limits", "cap"),
    [
        (Limits(), None),
        (Limits(max_concurrent_requests=1), 1),
        (Limits(max_concurrent_requests=3), 1),
        (Limits(max_concurrent_requests=50), 25),
        (Limits(max_concurrent_requests=50, max_concurrent_per_subject=40), 40),
        (Limits(max_concurrent_per_subject=7), 7),
    ],
)
async def test_per_caller_cap_defaults_to_a_share_of_the_server_wide_one(
    limits: Limits, cap: int | None
) -> None:
    assert limits.concurrency_cap_per_subject() == cap


async def test_a_caller_refused_for_concurrency_keeps_its_rate_allowance() -> None:
    admission = _Admission(Limits(max_concurrent_per_subject=1, max_requests_per_minute=2))
    await admission.enter("alice")
    with pytest.raises(SubjectOverloaded):
        await admission.enter("alice")
    await admission.leave("alice")
    await admission.enter("alice")  # the second of two tokens: the refusal above took none


async def test_rate_limit_allows_at_most_the_limit_in_any_minute_per_caller() -> None:
    admission = _Admission(Limits(max_requests_per_minute=60))
    for _ in range(30):
        await admission.enter("alice")
        await admission.leave("alice")
    admission.clock.advance(30.0)
    for _ in range(30):
        await admission.enter("alice")
        await admission.leave("alice")
    with pytest.raises(RateLimited) as caught:
        await admission.enter("alice")
    assert caught.value.code == "RATE_LIMITED"
    assert "60 requests per minute (limits.max_requests_per_minute): 60 in the last minute" in (
        caught.value.message
    )
    # Room again once the oldest of the 60 is a minute old: the first 30 were at t=0.
    assert caught.value.retry_after_s == pytest.approx(30.0)
    await admission.enter("bob")  # another caller has its own allowance
    await admission.leave("bob")
    admission.clock.advance(29.9)
    with pytest.raises(RateLimited):
        await admission.enter("alice")
    admission.clock.advance(0.2)
    for _ in range(30):
        await admission.enter("alice")
        await admission.leave("alice")
    with pytest.raises(RateLimited):
        await admission.enter("alice")


async def test_a_rejected_request_does_not_count_as_in_flight() -> None:
    admission = _Admission(Limits(max_requests_per_minute=1))
    await admission.enter("alice")
    with pytest.raises(RateLimited):
        await admission.enter("alice")
    assert admission.in_flight == 1
    assert admission.admission.in_flight_of("alice") == 1
    await admission.leave("alice")
    assert admission.admission.in_flight_of("alice") == 0


async def test_the_limits_of_each_request_apply_so_a_reload_applies() -> None:
    admission = _Admission(Limits(max_concurrent_requests=1))
    await admission.enter("a")
    with pytest.raises(Overloaded):
        await admission.enter("b")
    admission.limits = Limits(max_concurrent_requests=5)
    await admission.enter("b")


async def test_counters_of_idle_callers_are_swept_so_memory_stays_bounded() -> None:
    admission = _Admission(Limits(max_requests_per_minute=1))
    store = admission.store
    for index in range(SWEEP_AT + 1):
        await admission.enter(f"caller-{index}")
        await admission.leave(f"caller-{index}")
    admission.clock.advance(61)
    await admission.enter("late")
    await admission.leave("late")
    for index in range(SWEEP_AT):
        await admission.enter(f"other-{index}")
        await admission.leave(f"other-{index}")
    assert store.tracked_keys <= SWEEP_AT + 1
    with pytest.raises(RateLimited):
        await admission.enter("late")


class _Limited(NamedTuple):
    harness: Harness
    admission: Admission
    execute: ExecutePrompt
    stream: StreamPrompt


def _limited(limits: Limits) -> _Limited:
    """Both use cases behind a real Admission over an in-memory store, under `limits`."""
    harness = Harness()
    harness.set_limits(limits)
    admission = Admission(MemoryQuotaStore(), harness.clock)
    pipeline = dataclasses.replace(harness.pipeline, admission=admission)
    return _Limited(
        harness,
        admission,
        ExecutePrompt(pipeline, harness.gateway, harness.observer),
        StreamPrompt(pipeline, harness.gateway, harness.observer),
    )


async def test_execute_releases_its_slot_on_success_and_failure() -> None:
    harness, admission, execute, _ = _limited(Limits(max_concurrent_requests=1))
    harness.script("fine")
    ok = await execute(prompt_request("hi"), CallContext())
    assert isinstance(ok, Answer)
    bad = await execute(prompt_request("hi", model="nope"), CallContext())
    assert isinstance(bad, Failure)
    assert admission.in_flight == 0


async def test_over_limit_execute_is_a_rate_limited_failure() -> None:
    harness, _, execute, _ = _limited(Limits(max_requests_per_minute=1))
    harness.script("fine")
    who = CallContext(principal=Principal(subject="carol"))
    assert isinstance(await execute(prompt_request("hi"), who), Answer)
    second = await execute(prompt_request("hi"), who)
    assert isinstance(second, Failure)
    assert isinstance(second.error, RateLimited)
    assert harness.observer.records[-1].outcome == "RATE_LIMITED"


async def test_cancelled_stream_releases_its_slot() -> None:
    harness, admission, _, stream = _limited(Limits(max_concurrent_requests=1))
    harness.script("first", HANG)
    opened = stream(prompt_request("hi"), CallContext())

    async def consume() -> None:
        async for _ in opened.events:
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(harness.gateway.hanging.wait(), 5)
    assert admission.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.in_flight == 0


@pytest.mark.parametrize(
    "costly",
    [
        prompt_request("hi", model="nope"),
        prompt_request("hi", model="large", schema={"type": 5}),
        PromptRequest(messages=(), rejection=SchemaInvalid("response_model_schema: not JSON")),
        prompt_request("hi", model="large"),
    ],
)
async def test_a_caller_over_its_rate_is_told_that_and_nothing_costlier(
    costly: PromptRequest,
) -> None:
    harness, _, execute, _ = _limited(Limits(max_requests_per_minute=1))
    harness.script("fine")
    who = CallContext(principal=Principal(subject="carol", allowed_models=("echo",)))
    assert isinstance(await execute(prompt_request("hi"), who), Answer)

    refused = await execute(costly, who)

    assert isinstance(refused, Failure)
    assert refused.error.code == "RATE_LIMITED"


async def test_requests_refused_for_their_content_spend_the_allowance_too() -> None:
    _, admission, execute, _ = _limited(Limits(max_requests_per_minute=2))
    who = CallContext(principal=Principal(subject="mallory"))
    for bad in (
        prompt_request("hi", model="nope"),
        PromptRequest(messages=(), rejection=SchemaInvalid("response_model_schema: not JSON")),
    ):
        result = await execute(bad, who)
        assert isinstance(result, Failure)
        assert result.error.code in {"MODEL_NOT_FOUND", "INVALID_SCHEMA"}
    third = await execute(prompt_request("hi"), who)
    assert isinstance(third, Failure)
    assert third.error.code == "RATE_LIMITED"
    assert admission.in_flight == 0


async def test_an_empty_request_is_refused_before_the_rate_limit_and_costs_nothing() -> None:
    harness, _, execute, _ = _limited(Limits(max_requests_per_minute=1))
    harness.script("fine")
    who = CallContext(principal=Principal(subject="dave"))
    empty = await execute(prompt_request(" "), who)
    assert isinstance(empty, Failure)
    assert empty.error.code == "EMPTY_REQUEST"
    assert isinstance(await execute(prompt_request("hi"), who), Answer)


class _CountingPolicy(FakePolicySource):
    reads = 0

    def current(self) -> ServerPolicy:
        self.reads += 1
        return super().current()


async def test_the_policy_is_read_once_per_request() -> None:
    harness = Harness(
        policy=_CountingPolicy(sample_policy(limits=Limits(max_concurrent_requests=4)))
    )
    admission = Admission(MemoryQuotaStore(), harness.clock)
    pipeline = dataclasses.replace(harness.pipeline, admission=admission)
    harness.script("fine")
    execute = ExecutePrompt(pipeline, harness.gateway, harness.observer)
    stream = StreamPrompt(pipeline, harness.gateway, harness.observer)

    assert isinstance(await execute(prompt_request("hi"), CallContext()), Answer)
    async with stream(prompt_request("hi"), CallContext()) as events:
        async for _ in events:
            pass

    assert isinstance(harness.policy, _CountingPolicy)
    assert harness.policy.reads == 2
