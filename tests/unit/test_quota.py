"""Which limits apply to a caller, and the reservation arithmetic, against in-memory fakes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest

from adapters.quota import MemoryQuotaStore
from application.admission import Admission
from application.stream_prompt import StreamPrompt
from domain.errors import BudgetExhausted, RateLimited, SubjectOverloaded
from domain.principal import CallContext, Principal
from domain.quota import (
    CHECK_ORDER,
    Breach,
    Charge,
    ChargePlan,
    Counter,
    LimitKind,
    LimitSet,
    QuotaPolicy,
    QuotaRule,
    Scope,
    applicable_limits,
    charges_for,
    settlement,
    window_of,
)
from domain.usage import ModelPrice, Usage
from tests.unit.fakes import DEFAULT_NOW, HANG, FakeClock, Harness, prompt_request, sample_policy

POLICY = QuotaPolicy(
    default=LimitSet(tokens_per_minute=1000, usd_per_day=5.0),
    subjects=(
        QuotaRule("bot-*", LimitSet(requests_per_minute=10, tokens_per_minute=500)),
        QuotaRule("bot-7", LimitSet(requests_per_minute=30)),
        QuotaRule(
            "alice",
            LimitSet(tokens_per_day=100_000),
            models=(("gpt-4o*", LimitSet(usd_per_day=1.0)),),
        ),
    ),
    teams=(QuotaRule("research", LimitSet(usd_per_month=200.0, concurrent=8)),),
    server_concurrent=100,
)


def _limits(
    subject: str, team: str | None = None, model: str | None = "echo"
) -> set[tuple[object, ...]]:
    return {
        (limit.scope.value, limit.owner, limit.models, limit.kind.value, limit.amount, limit.source)
        for limit in applicable_limits(POLICY, subject, team, model)
    }


def test_tightest_matching_subject_rule_wins_per_kind_and_defaults_fill_the_rest() -> None:
    assert _limits("bot-7") == {
        ("server", "", None, "concurrent", 100, "server"),
        ("subject", "bot-7", None, "requests_per_minute", 10, "bot-*"),
        ("subject", "bot-7", None, "tokens_per_minute", 500, "bot-*"),
        ("subject", "bot-7", None, "usd_per_day", 5.0, "default"),
    }


def test_a_subject_no_rule_names_gets_the_defaults() -> None:
    assert _limits("carol") == {
        ("server", "", None, "concurrent", 100, "server"),
        ("subject", "carol", None, "tokens_per_minute", 1000, "default"),
        ("subject", "carol", None, "usd_per_day", 5.0, "default"),
    }


def test_model_rules_apply_only_to_matching_models_and_team_rules_to_members() -> None:
    on_echo = _limits("alice", "research", "echo")
    on_gpt = _limits("alice", "research", "gpt-4o-mini")
    assert on_gpt - on_echo == {("subject", "alice", "gpt-4o*", "usd_per_day", 1.0, "alice")}
    assert ("team", "research", None, "usd_per_month", 200.0, "research") in on_echo
    assert ("team", "research", None, "concurrent", 8, "research") in on_echo
    assert not any(row[0] == "team" for row in _limits("alice", "other-team"))


def test_cheap_limits_are_checked_before_budgets() -> None:
    kinds = [limit.kind for limit in applicable_limits(POLICY, "alice", "research", "gpt-4o")]
    assert kinds == sorted(kinds, key=CHECK_ORDER.index)
    assert kinds[0] is LimitKind.CONCURRENT
    assert kinds[-1] is LimitKind.USD_PER_MONTH
    assert applicable_limits(POLICY, "alice", "research", "gpt-4o")[0].scope is Scope.SERVER


def test_windows_are_utc_minutes_days_and_calendar_months() -> None:
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    assert window_of(LimitKind.TOKENS_PER_MINUTE, now)[1] == 1_700_000_040.0
    assert window_of(LimitKind.USD_PER_DAY, now)[1] == 1_700_006_400.0  # next midnight
    suffix, end, _ = window_of(LimitKind.USD_PER_MONTH, now)
    assert (suffix, end) == ("M202311", 1_701_388_800.0)  # 2023-12-01 00:00 UTC
    assert window_of(LimitKind.USD_PER_MONTH, 1_703_000_000.0)[1] == 1_704_067_200.0  # Jan 1


def test_settlement_replaces_the_estimate_with_what_was_used() -> None:
    limits = applicable_limits(POLICY, "alice", "research", "gpt-4o")
    charges = tuple(charges_for(limits, 300, 0.03, DEFAULT_NOW))
    by_kind = {(charge.limit.scope, charge.limit.kind): charge for charge in charges}
    assert by_kind[(Scope.SUBJECT, LimitKind.TOKENS_PER_MINUTE)].amount == 300
    assert by_kind[(Scope.TEAM, LimitKind.USD_PER_MONTH)].amount == 0.03
    adjustments = {a.key: a for a in settlement(charges, tokens=120, cost_usd=0.05)}
    minute = by_kind[(Scope.SUBJECT, LimitKind.TOKENS_PER_MINUTE)]
    assert adjustments[minute.key].delta == -180
    month = by_kind[(Scope.TEAM, LimitKind.USD_PER_MONTH)]
    assert adjustments[month.key].delta == pytest.approx(0.02)
    gauges = [a for a in adjustments.values() if a.counter is Counter.GAUGE]
    assert sorted(a.delta for a in gauges) == [-1.0, -1.0]  # server and team concurrency


def _admission(quotas: QuotaPolicy) -> tuple[Admission, MemoryQuotaStore, FakeClock]:
    store = MemoryQuotaStore()
    clock = FakeClock()
    return Admission(store, clock), store, clock


PRICED = {"echo": ModelPrice(input_per_million=1_000_000.0, output_per_million=1_000_000.0)}


async def test_a_spend_budget_is_overshot_by_at_most_the_requests_in_flight() -> None:
    # $1 per token, a $100 budget; each request is estimated at 1 input + 4 output tokens
    # ($5) and really uses 1 + 9 ($10).
    quotas = QuotaPolicy(default=LimitSet(usd_per_day=100.0), estimate_output_tokens=4)
    policy = sample_policy(prices=PRICED, quotas=quotas)
    admission, _, _ = _admission(quotas)
    who = Principal("alice")

    async def one() -> bool:
        try:
            reservation = await admission.admit(who, "echo", prompt_request("abcd"), policy)
        except BudgetExhausted:
            return False
        await asyncio.sleep(0)
        admission.settle(reservation, Usage(1, 9), 0)
        return True

    admitted = sum(await asyncio.gather(*(one() for _ in range(50))))
    await admission.close()
    # All 50 arrive before any settles: 20 reservations of $5 fill the budget exactly.
    assert admitted == 20
    with pytest.raises(BudgetExhausted) as caught:
        await admission.admit(who, "echo", prompt_request("abcd"), policy)
    message = caught.value.message
    assert "spend budget of $100.00 per day" in message
    assert "$200.00 used" in message  # 20 x $10: over by at most 20 x ($10 - $5)
    assert "resets at 2023-11-15 00:00 UTC" in message
    assert caught.value.retry_after_s == pytest.approx(1_700_006_400.0 - DEFAULT_NOW)


async def test_a_refused_request_reserves_nothing_anywhere() -> None:
    quotas = QuotaPolicy(
        subjects=(QuotaRule("alice", LimitSet(requests_per_minute=5, tokens_per_minute=100)),)
    )
    policy = sample_policy(quotas=quotas)
    admission, store, clock = _admission(quotas)
    who = Principal("alice")
    big = prompt_request("x" * 4000)  # about 1,000 input tokens: never fits 100 per minute
    with pytest.raises(RateLimited) as caught:
        await admission.admit(who, "echo", big, policy)
    assert "100 tokens per minute" in caught.value.message
    assert "needs about 1256" in caught.value.message
    limits = applicable_limits(policy.quotas, "alice", None, "echo")
    charges = charges_for(limits, 1, 0.0, clock.now())
    assert await store.usage(charges, clock.now()) == [0.0, 0.0]


async def test_a_breach_of_the_last_limit_takes_back_what_the_others_moved() -> None:
    # Every kind of counter, each already in use, and the last (the month's budget) too full
    # for one more request: the refusal leaves each counter where it was.
    quotas = QuotaPolicy(
        default=LimitSet(
            requests_per_minute=100,
            tokens_per_minute=10_000,
            concurrent=10,
            tokens_per_day=100_000,
            usd_per_month=1.0,
        ),
        server_concurrent=50,
    )
    store = MemoryQuotaStore()
    limits = applicable_limits(quotas, "alice", None, "echo")
    first = charges_for(limits, 300, 0.6, DEFAULT_NOW)
    assert store.reserve_now(first, DEFAULT_NOW) is None
    before = await store.usage(first, DEFAULT_NOW + 1)
    assert before == [1.0, 1.0, 1.0, 300.0, 300.0, 0.6]
    second = charges_for(limits, 300, 0.6, DEFAULT_NOW + 1)
    breach = store.reserve_now(second, DEFAULT_NOW + 1)
    assert breach is not None
    assert breach.charge.limit.kind is LimitKind.USD_PER_MONTH
    assert breach.used == pytest.approx(0.6)
    assert await store.usage(second, DEFAULT_NOW + 1) == before
    # And the counters still take a request that fits.
    third = charges_for(limits, 300, 0.3, DEFAULT_NOW + 1)
    assert store.reserve_now(third, DEFAULT_NOW + 1) is None
    assert await store.usage(third, DEFAULT_NOW + 1) == pytest.approx(
        [2.0, 2.0, 2.0, 600.0, 600.0, 0.9]
    )


def test_a_plan_names_the_counters_of_its_minute_and_outlives_it() -> None:
    limits = tuple(applicable_limits(POLICY, "bot-1", None, "echo"))
    plan = ChargePlan(limits, DEFAULT_NOW)
    minute_end = DEFAULT_NOW // 60 * 60 + 60  # DEFAULT_NOW is 20 s into its minute
    assert plan.holds_at(DEFAULT_NOW) and plan.holds_at(minute_end - 0.001)
    assert not plan.holds_at(minute_end) and not plan.holds_at(DEFAULT_NOW - 20.001)
    late = minute_end - 0.001
    # The same counters a request late in the minute would name for itself...
    assert [charge.key for charge in plan.charges] == [
        charge.key for charge in charges_for(limits, 1, 0.0, late)
    ]
    # ...and a log or gauge outlives the last request the plan charges.
    by_kind = {charge.limit.kind: charge for charge in plan.charges}
    assert by_kind[LimitKind.REQUESTS_PER_MINUTE].window_end >= late + 60
    assert by_kind[LimitKind.CONCURRENT].window_end >= late + 24 * 3600
    # Each charge takes its share of the estimate: one request, the tokens or the dollars.
    amounts = dict(zip([c.limit.kind for c in plan.charges], plan.amounts(300, 0.25), strict=True))
    assert amounts == {
        LimitKind.CONCURRENT: 1.0,
        LimitKind.REQUESTS_PER_MINUTE: 1.0,
        LimitKind.TOKENS_PER_MINUTE: 300.0,
        LimitKind.USD_PER_DAY: 0.25,
    }
    alone = ChargePlan(
        tuple(applicable_limits(QuotaPolicy(default=LimitSet(usd_per_day=1.0)), "x", None, "echo")),
        DEFAULT_NOW,
    )
    assert alone.amounts(300, 0.25) == (0.25,)
    assert ChargePlan((), DEFAULT_NOW).amounts(300, 0.25) == ()


async def test_the_next_minute_charges_the_next_minutes_window() -> None:
    quotas = QuotaPolicy(default=LimitSet(tokens_per_minute=1000), estimate_output_tokens=90)
    policy = sample_policy(quotas=quotas)
    admission, store, clock = _admission(quotas)
    who = Principal("alice")
    request = prompt_request("x" * 40)  # 10 input tokens + 90 reserved for the output
    for _ in range(10):
        await admission.admit(who, "echo", request, policy)
    with pytest.raises(RateLimited):
        await admission.admit(who, "echo", request, policy)
    clock.advance(40)  # into the next minute: a new window, the old one full still
    reservation = await admission.admit(who, "echo", request, policy)
    limits = applicable_limits(quotas, "alice", None, "echo")
    assert await store.usage(charges_for(limits, 0, 0.0, clock.now()), clock.now()) == [100.0]
    # Settled against the window it was reserved in.
    admission.settle(reservation, Usage(10, 20), 0)
    assert await store.usage(charges_for(limits, 0, 0.0, clock.now()), clock.now()) == [30.0]


async def test_team_concurrency_is_shared_by_its_members() -> None:
    quotas = QuotaPolicy(teams=(QuotaRule("red", LimitSet(concurrent=2)),))
    policy = sample_policy(quotas=quotas)
    admission, _, _ = _admission(quotas)
    first = await admission.admit(Principal("a", team="red"), "echo", prompt_request("x"), policy)
    await admission.admit(Principal("b", team="red"), "echo", prompt_request("x"), policy)
    with pytest.raises(SubjectOverloaded) as caught:
        await admission.admit(Principal("c", team="red"), "echo", prompt_request("x"), policy)
    assert "team 'red' already has 2 requests in flight" in caught.value.message
    await admission.admit(Principal("d", team="blue"), "echo", prompt_request("x"), policy)
    admission.settle(first, Usage(), 0)
    await admission.close()
    await admission.admit(Principal("c", team="red"), "echo", prompt_request("x"), policy)


async def test_a_cancelled_stream_is_charged_for_the_output_it_produced() -> None:
    quotas = QuotaPolicy(default=LimitSet(tokens_per_minute=1000), estimate_output_tokens=100)
    harness = Harness()
    harness.policy.replace(sample_policy(quotas=quotas))
    store = MemoryQuotaStore()
    admission = Admission(store, harness.clock)
    pipeline = dataclasses.replace(harness.pipeline, admission=admission)
    stream = StreamPrompt(pipeline, harness.gateway, harness.observer)
    harness.script("a" * 40, "b" * 40, HANG)  # 80 characters: 20 tokens at 4 per token
    opened = stream(prompt_request("x" * 8), CallContext(principal=Principal("alice")))
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for _ in opened.events:
            seen += 1

    task = asyncio.create_task(consume())
    await asyncio.wait_for(harness.gateway.hanging.wait(), 5)
    limits = applicable_limits(harness.policy.current().quotas, "alice", None, "echo")
    charges = charges_for(limits, 1, 0.0, harness.clock.now())
    assert await store.usage(charges, harness.clock.now()) == [102.0]  # 2 in + 100 reserved
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await admission.close()
    assert seen == 2
    assert await store.usage(charges, harness.clock.now()) == [22.0]  # 2 in + 20 streamed
    assert admission.in_flight == 0


class SlowStore(MemoryQuotaStore):
    """A store that answers only when told to, like Redis across a slow network."""

    local = False

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def reserve(self, charges: Sequence[Charge], now: float) -> Breach | None:
        await self.answer.wait()
        return self.reserve_now(charges, now)


async def test_a_request_cancelled_while_reserving_gives_its_reservation_back() -> None:
    quotas = QuotaPolicy(default=LimitSet(tokens_per_minute=1000), server_concurrent=5)
    policy = sample_policy(quotas=quotas)
    store = SlowStore()
    admission = Admission(store, FakeClock())
    waiting = asyncio.create_task(
        admission.admit(Principal("alice"), "echo", prompt_request("abcd"), policy)
    )
    await asyncio.sleep(0)
    waiting.cancel()
    store.answer.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    for _ in range(10):
        await asyncio.sleep(0)
    await admission.close()
    limits = applicable_limits(policy.quotas, "alice", None, "echo")
    charges = charges_for(limits, 0, 0.0, DEFAULT_NOW)
    assert await store.usage(charges, DEFAULT_NOW) == [0.0, 0.0]
    assert admission.in_flight == 0
