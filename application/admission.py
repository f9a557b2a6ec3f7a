"""Admission control: reserve a request's share of every applicable limit before the model is
called, settle the actual usage when the call ends.

Which limits apply comes with each request (from the policy it was read with), so a reload
applies at once; the counters live in a QuotaStore (this process's memory, the supervisor's
for `--workers`, or Redis for replicas), which is what makes a limit hold across processes.

A reservation charges the request's estimate (input characters / chars_per_token, plus
max_tokens or a configured default for the output) to every token and spend counter; the
settlement replaces it with what the model reported, or, for a stream cut short, with the
output produced so far. So a budget can be crossed by at most what the requests in flight
use beyond their estimates, and the next request is refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from application.ports import Clock, LocalQuotaStore, QuotaStore, QuotaStoreUnavailable
from domain.errors import (
    BudgetExhausted,
    LimitsUnavailable,
    Overloaded,
    ProxyError,
    RateLimited,
    SubjectOverloaded,
)
from domain.policy import ServerPolicy
from domain.principal import Principal
from domain.quota import (
    Adjustment,
    Breach,
    Charge,
    ChargePlan,
    LimitKind,
    QuotaPolicy,
    Scope,
    applicable_limits,
    charges_for,
    estimate_tokens,
    settlement,
    settlement_deltas,
)
from domain.request import PromptRequest
from domain.usage import ModelPrice, Usage

log = logging.getLogger("llm_proxy.admission")

# How long to suggest waiting when the server is full; streams end at unknown times.
OVERLOADED_RETRY_AFTER_S = 1.0
# Resolved limits kept per policy snapshot, for this many callers and models at most.
MAX_RESOLVED = 10_000
# A store that cannot be reached is reported at most this often while failing open.
FAIL_OPEN_LOG_INTERVAL_S = 60.0
# Adjustments sent to a shared store in one call at most; the rest go in the next.
MAX_SETTLEMENTS_PER_CALL = 256


@dataclass(slots=True)
class Reservation:
    subject: str
    charges: tuple[Charge, ...]
    # What each charge reserved, when the charges are a plan's (this process's memory); else
    # the charges carry their amounts.
    amounts: tuple[float, ...] | None
    input_tokens: int
    price: ModelPrice | None
    chars_per_token: float


class Admission:
    def __init__(
        self,
        store: QuotaStore,
        clock: Clock,
        *,
        fail_open: bool = False,
        on_fail_open: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        # This process's memory: reserved and settled in place, nothing to await.
        self._local = store if store.local and isinstance(store, LocalQuotaStore) else None
        self._clock = clock
        self._fail_open = fail_open
        self._on_fail_open = on_fail_open
        self._fail_open_logged = -FAIL_OPEN_LOG_INTERVAL_S
        self._in_flight = 0
        # Only callers with a request in flight have an entry, so this is bounded by the
        # number of requests in flight.
        self._in_flight_by_subject: dict[str, int] = {}
        # Settlements bound for a shared store: sent together by one task, however many
        # requests end meanwhile, rather than by a task of each request's own.
        self._unsent: list[Adjustment] = []
        self._sender: asyncio.Task[None] | None = None
        # Which limits apply depends only on the policy and who asks for which model, and the
        # counters they move change only once a minute: both kept (per policy snapshot), as
        # resolving rules and naming counters for every request were a visible cost.
        self._resolved: dict[tuple[str, str | None, str | None], ChargePlan] = {}
        self._resolved_for: QuotaPolicy | None = None
        # Whether the last call to the store failed: the health check reports it.
        self.store_unavailable = False

    @property
    def in_flight(self) -> int:
        """Requests of this process admitted and not yet settled."""
        return self._in_flight

    def in_flight_of(self, subject: str) -> int:
        return self._in_flight_by_subject.get(subject, 0)

    async def admit(
        self,
        principal: Principal,
        model_id: str | None,
        request: PromptRequest,
        policy: ServerPolicy,
    ) -> Reservation:
        """Reserve the request's share of every limit, or raise the refusal; every
        reservation must be passed to settle() exactly once."""
        quotas = policy.quotas
        plan = self._plan(quotas, principal, model_id)
        price = policy.price_for(model_id) if model_id is not None else None
        input_chars = request.input_length()
        input_tokens = math.ceil(input_chars / quotas.chars_per_token)
        charges: tuple[Charge, ...] = ()
        amounts: tuple[float, ...] | None = None
        if plan.limits:
            tokens = estimate_tokens(input_chars, _max_tokens(request), quotas)
            cost = price.cost_of(input_tokens, tokens - input_tokens) if price else 0.0
            now = self._clock.now()
            if self._local is not None:
                if not plan.holds_at(now):
                    plan = self._replan(principal, model_id, plan, now)
                charges = plan.charges
                amounts = plan.amounts(tokens, cost)
                breach = self._local.reserve_amounts(charges, amounts, now)
                if breach is not None:
                    raise refusal(breach, principal.subject)
            else:
                charges = tuple(charges_for(plan.limits, tokens, cost, now))
                charges = await self._reserve_remote(charges, now, principal.subject)
        self._in_flight += 1
        subject = principal.subject
        in_flight = self._in_flight_by_subject
        in_flight[subject] = in_flight.get(subject, 0) + 1
        return Reservation(subject, charges, amounts, input_tokens, price, quotas.chars_per_token)

    async def _reserve_remote(
        self, charges: tuple[Charge, ...], now: float, subject: str
    ) -> tuple[Charge, ...]:
        """The charges reserved in a shared store; none when it failed and limits fail open."""
        try:
            breach = await self._reserve(charges, now)
        except QuotaStoreUnavailable as exc:
            self.store_unavailable = True
            if not self._fail_open:
                raise LimitsUnavailable(
                    "this server cannot check its limits right now (their shared store is "
                    "unreachable); retry shortly"
                ) from exc
            self._note_fail_open(exc)
            return ()
        self.store_unavailable = False
        if breach is not None:
            raise refusal(breach, subject)
        return charges

    def _plan(self, quotas: QuotaPolicy, principal: Principal, model_id: str | None) -> ChargePlan:
        if quotas is not self._resolved_for or len(self._resolved) >= MAX_RESOLVED:
            self._resolved = {}
            self._resolved_for = quotas
        key = (principal.subject, principal.team, model_id)
        found = self._resolved.get(key)
        if found is None:
            limits = tuple(applicable_limits(quotas, principal.subject, principal.team, model_id))
            found = self._resolved[key] = ChargePlan(limits, self._clock.now())
        return found

    def _replan(
        self, principal: Principal, model_id: str | None, stale: ChargePlan, now: float
    ) -> ChargePlan:
        """The plan for the minute `now` is in, in place of _plan()'s for an earlier one."""
        plan = self._resolved[(principal.subject, principal.team, model_id)] = ChargePlan(
            stale.limits, now
        )
        return plan

    async def _reserve(self, charges: tuple[Charge, ...], now: float) -> Breach | None:
        # A request cancelled while its reservation is on the way may still have been
        # reserved: then it is given back as soon as the store answers, or its concurrency
        # slots would stay taken until their keys expire.
        sent = asyncio.ensure_future(self._store.reserve(charges, now))
        try:
            return await asyncio.shield(sent)
        except asyncio.CancelledError:
            sent.add_done_callback(lambda done: self._give_back(done, charges))
            raise

    def _give_back(self, done: asyncio.Future[Breach | None], charges: tuple[Charge, ...]) -> None:
        if done.cancelled() or done.exception() is not None or done.result() is not None:
            return
        self._send_soon(settlement(charges, 0, 0.0))

    def settle(self, reservation: Reservation, usage: Usage, output_chars: int) -> None:
        """The request is over: give back its concurrency and charge what it really used
        (what the model reported; else the input estimate and the output streamed so far)."""
        self._in_flight -= 1
        subject = reservation.subject
        held = self._in_flight_by_subject.pop(subject) - 1
        if held:
            self._in_flight_by_subject[subject] = held
        if not reservation.charges:
            return
        input_tokens = usage.input_tokens
        if input_tokens is None:
            input_tokens = reservation.input_tokens
        output_tokens = usage.output_tokens
        if output_tokens is None:
            output_tokens = math.ceil(output_chars / reservation.chars_per_token)
        price = reservation.price
        cost = price.cost_of(input_tokens, output_tokens) if price is not None else 0.0
        tokens = input_tokens + output_tokens
        if reservation.amounts is not None and self._local is not None:
            # Nothing to wait for: settled now, without a task per request.
            deltas = settlement_deltas(reservation.charges, reservation.amounts, tokens, cost)
            if deltas:
                self._local.settle_now(deltas, self._clock.now())
            return
        adjustments = settlement(reservation.charges, tokens, cost)
        if adjustments:
            self._send_soon(adjustments)

    def _send_soon(self, adjustments: list[Adjustment]) -> None:
        # Settling never holds the request up; close() waits for what is still unsent.
        self._unsent += adjustments
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_settlements())

    async def _send_settlements(self) -> None:
        try:
            while self._unsent:
                batch = self._unsent[:MAX_SETTLEMENTS_PER_CALL]
                del self._unsent[:MAX_SETTLEMENTS_PER_CALL]
                try:
                    await self._store.adjust(batch, self._clock.now())
                except QuotaStoreUnavailable as exc:
                    self.store_unavailable = True
                    self._note_fail_open(exc)
        finally:
            self._sender = None

    async def close(self) -> None:
        """Wait for the settlements still on their way to the store."""
        if self._sender is not None:
            await asyncio.wait({self._sender}, timeout=5.0)

    def _note_fail_open(self, error: Exception) -> None:
        if self._on_fail_open is not None:
            self._on_fail_open()
        now = time.monotonic()
        if now - self._fail_open_logged >= FAIL_OPEN_LOG_INTERVAL_S:
            self._fail_open_logged = now
            mode = "admitting requests unchecked" if self._fail_open else "refusing requests"
            log.error("limits store unreachable (%s); %s", error, mode)


def _max_tokens(request: PromptRequest) -> int | None:
    value = request.options.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_KIND_TEXT = {
    LimitKind.REQUESTS_PER_MINUTE: "{n} requests per minute",
    LimitKind.TOKENS_PER_MINUTE: "{n} tokens per minute",
    LimitKind.CONCURRENT: "{n} concurrent requests",
    LimitKind.TOKENS_PER_DAY: "token budget of {n} per day",
    LimitKind.USD_PER_DAY: "spend budget of ${n} per day",
    LimitKind.USD_PER_MONTH: "spend budget of ${n} per month",
}


def _amount(kind: LimitKind, value: float) -> str:
    if kind in (LimitKind.USD_PER_DAY, LimitKind.USD_PER_MONTH):
        # Cents, except for amounts below a dollar, where cents would round a request to 0.
        return f"{value:.2f}" if value == 0 or abs(value) >= 1 else f"{value:.4f}"
    return f"{value:g}"


def _source(breach: Breach) -> str:
    limit = breach.charge.limit
    if limit.source != "default":
        return f"quotas.{limit.scope.value}s rule {limit.source!r}"
    if limit.kind is LimitKind.CONCURRENT:
        return "limits.max_concurrent_per_subject"
    if limit.kind is LimitKind.REQUESTS_PER_MINUTE:
        return "limits.max_requests_per_minute"
    return "quotas.default"


def refusal(breach: Breach, subject: str) -> ProxyError:
    """The error a caller gets for a breached limit: which limit, its use, when it resets."""
    limit = breach.charge.limit
    kind = limit.kind
    wait = breach.retry_after_s
    if limit.scope is Scope.SERVER:
        return Overloaded(
            f"the server is at its limit of {limit.amount:g} concurrent requests; retry shortly",
            wait,
        )
    who = repr(subject) if limit.scope is Scope.SUBJECT else f"team {limit.owner!r}"
    models = f" for models matching {limit.models!r}" if limit.models is not None else ""
    source = _source(breach)
    if kind is LimitKind.CONCURRENT:
        return SubjectOverloaded(
            f"{who} already has {breach.used:g} requests in flight{models}, this server's "
            f"limit per caller ({source}); finish or cancel one, then retry",
            wait,
        )
    text = _KIND_TEXT[kind].format(n=_amount(kind, limit.amount))
    used = _amount(kind, breach.used)
    if kind is LimitKind.REQUESTS_PER_MINUTE:
        return RateLimited(
            f"{who} is over this server's limit of {text}{models} ({source}): {used} in the "
            f"last minute; retry in {wait:.1f}s",
            wait,
        )
    needs = _amount(kind, breach.charge.amount)
    if kind is LimitKind.TOKENS_PER_MINUTE:
        return RateLimited(
            f"{who} is over its limit of {text}{models} ({source}): {used} used this minute "
            f"and this request needs about {needs}; the minute resets in {wait:.1f}s",
            wait,
        )
    resets = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(breach.charge.window_end))
    spent = f"${used}" if kind is not LimitKind.TOKENS_PER_DAY else f"{used} tokens"
    return BudgetExhausted(
        f"{who} has used its {text}{models} ({source}): {spent} used, this request needs "
        f"about {needs} more; the budget resets at {resets} (in {_duration(wait)})",
        wait,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f}m"
    hours = minutes / 60
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"
