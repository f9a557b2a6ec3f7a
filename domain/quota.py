"""Quotas and budgets: which limits apply to a caller, and what one request charges them.

Rules name subjects (a token's `sub`) or teams (its `team` claim) exactly or by glob, and may
narrow to models by glob. For each kind of limit the tightest applicable value wins; a kind
no subject rule sets falls back to the default. A team rule limits the team's members
together; a subject rule each subject on its own.

Counters (what a store keeps) come in three shapes: a sliding log (requests in the last 60
seconds: exact, never more than the limit in any minute), a fixed window (tokens per minute,
per UTC day, spend per UTC day and calendar month) and a gauge (requests in flight).
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Sequence
from dataclasses import field, fields
from enum import StrEnum
from fnmatch import fnmatchcase

from domain.value import value_object


class LimitKind(StrEnum):
    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    CONCURRENT = "concurrent"
    TOKENS_PER_DAY = "tokens_per_day"
    USD_PER_DAY = "usd_per_day"
    USD_PER_MONTH = "usd_per_month"

    @property
    def is_budget(self) -> bool:
        return self in _BUDGETS


# Concurrency first (a full server refuses before anything is counted), budgets last.
CHECK_ORDER = (
    LimitKind.CONCURRENT,
    LimitKind.REQUESTS_PER_MINUTE,
    LimitKind.TOKENS_PER_MINUTE,
    LimitKind.TOKENS_PER_DAY,
    LimitKind.USD_PER_DAY,
    LimitKind.USD_PER_MONTH,
)

_BUDGETS = frozenset({LimitKind.TOKENS_PER_DAY, LimitKind.USD_PER_DAY, LimitKind.USD_PER_MONTH})


class Scope(StrEnum):
    SERVER = "server"
    SUBJECT = "subject"
    TEAM = "team"


SCOPE_ORDER = (Scope.SERVER, Scope.SUBJECT, Scope.TEAM)


class Counter(StrEnum):
    LOG = "log"
    WINDOW = "window"
    GAUGE = "gauge"


@value_object
class LimitSet:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent: int | None = None
    tokens_per_day: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None

    def items(self) -> list[tuple[LimitKind, float]]:
        return [
            (LimitKind(field.name), float(value))
            for field in fields(self)
            if (value := getattr(self, field.name)) is not None
        ]


@value_object
class QuotaRule:
    """Limits for the subjects or teams whose name matches `pattern` (exact or glob)."""

    pattern: str
    limits: LimitSet = LimitSet()
    # (model glob, limits) pairs counted over the models matching the glob only.
    models: tuple[tuple[str, LimitSet], ...] = ()


@value_object
class QuotaPolicy:
    # Per subject, for each kind no matching subject rule sets.
    default: LimitSet = LimitSet()
    subjects: tuple[QuotaRule, ...] = ()
    teams: tuple[QuotaRule, ...] = ()
    # Requests in flight over the whole server (every worker and replica sharing the store).
    server_concurrent: int | None = None
    # Output tokens reserved for a request that does not say (max_tokens) how many it wants.
    estimate_output_tokens: int = 256
    chars_per_token: float = 4.0

    @property
    def enabled(self) -> bool:
        return bool(
            self.server_concurrent is not None
            or self.default.items()
            or self.subjects
            or self.teams
        )


@value_object
class AppliedLimit:
    scope: Scope
    # The subject or team the counter belongs to ("" for the server).
    owner: str
    # None: every model; else the glob of the models the counter covers.
    models: str | None
    kind: LimitKind
    amount: float
    # Where the limit comes from, for messages: "default", or the rule's pattern.
    source: str
    # The name of its counter (a window's key adds the window); computed once.
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        key = f"{self.scope}:{self.owner}:{self.models or '*'}:{self.kind}"
        object.__setattr__(self, "key", key)


def applicable_limits(
    policy: QuotaPolicy, subject: str, team: str | None, model_id: str | None
) -> list[AppliedLimit]:
    """Every limit one request of `subject` (of `team`) on `model_id` must fit, tightest per
    kind; cheap checks (concurrency) first, budgets last."""
    found: list[AppliedLimit] = []
    if policy.server_concurrent is not None:
        found.append(
            AppliedLimit(
                Scope.SERVER, "", None, LimitKind.CONCURRENT, policy.server_concurrent, "server"
            )
        )
    found += _tightest(Scope.SUBJECT, subject, policy.subjects, model_id, policy.default)
    if team is not None:
        found += _tightest(Scope.TEAM, team, policy.teams, model_id, None)
    found.sort(key=lambda limit: (CHECK_ORDER.index(limit.kind), SCOPE_ORDER.index(limit.scope)))
    return found


def _tightest(
    scope: Scope,
    owner: str,
    rules: tuple[QuotaRule, ...],
    model_id: str | None,
    default: LimitSet | None,
) -> list[AppliedLimit]:
    best: dict[tuple[str | None, LimitKind], AppliedLimit] = {}

    def offer(models: str | None, limits: LimitSet, source: str) -> None:
        for kind, amount in limits.items():
            current = best.get((models, kind))
            if current is None or amount < current.amount:
                best[(models, kind)] = AppliedLimit(scope, owner, models, kind, amount, source)

    for rule in rules:
        if not fnmatchcase(owner, rule.pattern):
            continue
        offer(None, rule.limits, rule.pattern)
        if model_id is not None:
            for models, limits in rule.models:
                if fnmatchcase(model_id, models):
                    offer(models, limits, rule.pattern)
    if default is not None:
        for kind, amount in default.items():
            best.setdefault((None, kind), AppliedLimit(scope, owner, None, kind, amount, "default"))
    return list(best.values())


@value_object
class Estimate:
    tokens: int
    cost_usd: float


def estimate_tokens(input_chars: int, max_tokens: int | None, policy: QuotaPolicy) -> int:
    output = max_tokens if max_tokens is not None else policy.estimate_output_tokens
    return math.ceil(input_chars / policy.chars_per_token) + max(output, 0)


@value_object
class Charge:
    """One counter one request moves, with what it may reach."""

    limit: AppliedLimit
    key: str
    counter: Counter
    amount: float
    # Unix time the window ends (and its counter may expire); for a log, its length in s.
    window_end: float
    window_s: float


GAUGE_TTL_S = 24 * 3600.0


def window_of(kind: LimitKind, now: float) -> tuple[str, float, float]:
    """(key suffix, window end, window length) of the window `now` falls in."""
    if kind is LimitKind.TOKENS_PER_MINUTE:
        start = now // 60 * 60
        return f"m{int(start)}", start + 60, 60.0
    if kind in (LimitKind.TOKENS_PER_DAY, LimitKind.USD_PER_DAY):
        start = now // 86_400 * 86_400
        return f"d{int(start)}", start + 86_400, 86_400.0
    if kind is LimitKind.USD_PER_MONTH:
        moment = time.gmtime(now)
        year, month = moment.tm_year, moment.tm_mon
        start = calendar.timegm((year, month, 1, 0, 0, 0))
        end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
        return f"M{year:04d}{month:02d}", float(end), float(end - start)
    return "", now + GAUGE_TTL_S, 60.0


class _Windows:
    """window_of for the windows requests are charged in now: each window's name and bounds
    are worked out once, not per request (the calendar month needed two calendar
    conversions per request)."""

    __slots__ = ("_cached",)

    def __init__(self) -> None:
        # kind -> (first second the entry holds for, first second it no longer does, window).
        self._cached: dict[LimitKind, tuple[float, float, tuple[str, float, float]]] = {}

    def of(self, kind: LimitKind, now: float) -> tuple[str, float, float]:
        found = self._cached.get(kind)
        if found is not None and found[0] <= now < found[1]:
            return found[2]
        window = window_of(kind, now)
        _, end, length = window
        self._cached[kind] = (end - length, end, window)
        return window


_windows = _Windows()


def charges_for(limits: Sequence[AppliedLimit], estimate: Estimate, now: float) -> list[Charge]:
    charges = []
    for limit in limits:
        kind = limit.kind
        if kind is LimitKind.REQUESTS_PER_MINUTE:
            charges.append(Charge(limit, limit.key, Counter.LOG, 1.0, now + 60.0, 60.0))
            continue
        if kind is LimitKind.CONCURRENT:
            charges.append(Charge(limit, limit.key, Counter.GAUGE, 1.0, now + GAUGE_TTL_S, 0.0))
            continue
        suffix, end, length = _windows.of(kind, now)
        amount = estimate.cost_usd if kind in _USD else float(estimate.tokens)
        charges.append(Charge(limit, f"{limit.key}:{suffix}", Counter.WINDOW, amount, end, length))
    return charges


_USD = frozenset({LimitKind.USD_PER_DAY, LimitKind.USD_PER_MONTH})


@value_object
class Adjustment:
    key: str
    counter: Counter
    delta: float
    window_end: float


def settlement(charges: tuple[Charge, ...], tokens: int, cost_usd: float) -> list[Adjustment]:
    """What to change once the request is over: concurrency released, the reserved estimate
    replaced by the actual tokens and cost (in the window it was reserved in)."""
    adjustments = []
    for charge in charges:
        if charge.counter is Counter.GAUGE:
            adjustments.append(Adjustment(charge.key, Counter.GAUGE, -1.0, charge.window_end))
        elif charge.counter is Counter.WINDOW:
            actual = cost_usd if charge.limit.kind in _USD else float(tokens)
            if actual != charge.amount:
                adjustments.append(
                    Adjustment(
                        charge.key, Counter.WINDOW, actual - charge.amount, charge.window_end
                    )
                )
    return adjustments


@value_object
class Breach:
    """Why a store refused: which charge, how much is used, and when there is room again."""

    charge: Charge
    used: float
    retry_after_s: float
