"""Admission control: per-caller rate, server-wide concurrency, and release on every path."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from application._common import PromptPipeline
from application.admission import MAX_TRACKED_SUBJECTS, Admission
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from domain.answer import Answer, Failure
from domain.errors import Overloaded, RateLimited
from domain.policy import Limits
from domain.principal import CallContext, Principal
from domain.request import PromptRequest
from tests.unit.fakes import HANG, FakeClock, FakePolicySource, Harness, sample_policy


def _admission(limits: Limits) -> tuple[Admission, FakeClock, FakePolicySource]:
    clock = FakeClock()
    policy = FakePolicySource(sample_policy(limits=limits))
    return Admission(policy, clock), clock, policy


def test_no_limits_admits_everything() -> None:
    admission, _, _ = _admission(Limits(max_concurrent_requests=None, max_requests_per_minute=None))
    for _ in range(1000):
        admission.enter("alice")
    assert admission.in_flight == 1000


def test_concurrency_limit_rejects_then_admits_after_leave() -> None:
    admission, _, _ = _admission(Limits(max_concurrent_requests=2))
    admission.enter("a")
    admission.enter("b")
    with pytest.raises(Overloaded) as caught:
        admission.enter("c")
    assert "2 concurrent" in caught.value.message
    assert caught.value.retry_after_s > 0
    admission.leave()
    admission.enter("c")
    assert admission.in_flight == 2


def test_rate_limit_allows_a_burst_then_refills_per_caller() -> None:
    admission, clock, _ = _admission(Limits(max_requests_per_minute=60))
    for _ in range(60):
        admission.enter("alice")
        admission.leave()
    with pytest.raises(RateLimited) as caught:
        admission.enter("alice")
    assert caught.value.code == "RATE_LIMITED"
    assert caught.value.retry_after_s == pytest.approx(1.0)
    admission.enter("bob")  # another caller has its own allowance
    admission.leave()
    clock.advance(1.0)
    admission.enter("alice")  # one token refilled after a second at 60/min
    admission.leave()
    with pytest.raises(RateLimited):
        admission.enter("alice")


def test_a_rejected_request_does_not_count_as_in_flight() -> None:
    admission, _, _ = _admission(Limits(max_requests_per_minute=1))
    admission.enter("alice")
    with pytest.raises(RateLimited):
        admission.enter("alice")
    assert admission.in_flight == 1


def test_limits_are_read_per_request_so_a_reload_applies() -> None:
    admission, _, policy = _admission(Limits(max_concurrent_requests=1))
    admission.enter("a")
    with pytest.raises(Overloaded):
        admission.enter("b")
    policy.replace(sample_policy(limits=Limits(max_concurrent_requests=5)))
    admission.enter("b")


def test_tracked_callers_are_bounded() -> None:
    admission, _, _ = _admission(Limits(max_requests_per_minute=10))
    for index in range(MAX_TRACKED_SUBJECTS + 50):
        admission.enter(f"caller-{index}")
        admission.leave()
    assert len(admission._buckets) == MAX_TRACKED_SUBJECTS


def _limited_harness(limits: Limits) -> tuple[Harness, Admission, PromptPipeline]:
    harness = Harness()
    harness.set_limits(limits)
    admission = Admission(harness.policy, harness.clock)
    pipeline = dataclasses.replace(harness.pipeline, admission=admission)
    return harness, admission, pipeline


async def test_execute_releases_its_slot_on_success_and_failure() -> None:
    harness, admission, pipeline = _limited_harness(Limits(max_concurrent_requests=1))
    execute = ExecutePrompt(pipeline, harness.gateway, harness.observer)
    harness.script("fine")
    ok = await execute(PromptRequest(user_fragments=("hi",)), CallContext())
    assert isinstance(ok, Answer)
    bad = await execute(PromptRequest(user_fragments=("hi",), model="nope"), CallContext())
    assert isinstance(bad, Failure)
    assert admission.in_flight == 0


async def test_over_limit_execute_is_a_rate_limited_failure() -> None:
    harness, _, pipeline = _limited_harness(Limits(max_requests_per_minute=1))
    execute = ExecutePrompt(pipeline, harness.gateway, harness.observer)
    harness.script("fine")
    who = CallContext(principal=Principal(subject="carol"))
    assert isinstance(await execute(PromptRequest(user_fragments=("hi",)), who), Answer)
    second = await execute(PromptRequest(user_fragments=("hi",)), who)
    assert isinstance(second, Failure)
    assert isinstance(second.error, RateLimited)
    assert harness.observer.records[-1].outcome == "RATE_LIMITED"


async def test_cancelled_stream_releases_its_slot() -> None:
    harness, admission, pipeline = _limited_harness(Limits(max_concurrent_requests=1))
    stream = StreamPrompt(pipeline, harness.gateway, harness.observer)
    harness.script("first", HANG)
    opened = stream(PromptRequest(user_fragments=("hi",)), CallContext())

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
