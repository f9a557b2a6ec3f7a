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
from collections.abc import Callable, Sequence
from dataclasses import field, fields
from enum import StrEnum
from fnmatch import fnmatchcase
from operator import itemgetter

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


_COUNTER_OF = {LimitKind.REQUESTS_PER_MINUTE: Counter.LOG, LimitKind.CONCURRENT: Counter.GAUGE}
_USD = frozenset({LimitKind.USD_PER_DAY, LimitKind.USD_PER_MONTH})
# Reading a member off an enum class runs Python code (about 100 ns on 3.11), and charging
# and settling compare against them for every counter of every request.
_LOG, _WINDOW, _GAUGE = Counter.LOG, Counter.WINDOW, Counter.GAUGE


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
    # Worked out once, as every request charged against the limit needs them: the name of
    # its counter (a window's key adds the window), the counter's shape, and whether it
    # counts dollars rather than tokens.
    key: str = field(init=False, compare=False)
    counter: Counter = field(init=False, compare=False)
    in_usd: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        key = f"{self.scope}:{self.owner}:{self.models or '*'}:{self.kind}"
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "counter", _COUNTER_OF.get(self.kind, Counter.WINDOW))
        object.__setattr__(self, "in_usd", self.kind in _USD)


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


def charges_for(
    limits: Sequence[AppliedLimit], tokens: int, cost_usd: float, now: float
) -> list[Charge]:
    """What a request estimated at `tokens` and `cost_usd` charges each limit at `now`."""
    return [
        _charge(limit, cost_usd if limit.in_usd else float(tokens), now, now) for limit in limits
    ]


def _charge(limit: AppliedLimit, amount: float, now: float, counted_until: float) -> Charge:
    """The charge of `amount` on `limit`'s counter in the window `now` falls in. A log or a
    gauge is kept a window's length past `counted_until`, the last moment it counts a request
    (a window's counter lives as long as its window)."""
    counter = limit.counter
    if counter is _LOG:
        return Charge(limit, limit.key, _LOG, 1.0, counted_until + 60.0, 60.0)
    if counter is _GAUGE:
        return Charge(limit, limit.key, _GAUGE, 1.0, counted_until + GAUGE_TTL_S, 0.0)
    suffix, end, length = _windows.of(limit.kind, now)
    return Charge(limit, f"{limit.key}:{suffix}", _WINDOW, amount, end, length)


# What a charge counts, as an index into (one request, its tokens, its dollars).
_ONE, _TOKENS, _DOLLARS = 0, 1, 2


class ChargePlan:
    """The counters a request of one caller on one model moves, named for the minute they
    were worked out in: built once a minute for each caller and model, and reused by every
    request in that minute, which adds only its own estimate (`amounts`).

    Every window (UTC minute, day, calendar month) turns over on a minute boundary, so the
    windows' names and ends hold for the whole minute. A log's or gauge's counter is set to
    expire a window's length after the minute ends, so it outlives every request counted in
    the minute."""

    __slots__ = ("_from", "_pick", "_until", "charges", "limits")

    def __init__(self, limits: tuple[AppliedLimit, ...], now: float) -> None:
        self.limits = limits
        start = now // 60 * 60
        self._from, self._until = start, start + 60.0
        # A window's amount here is a placeholder: each request's own comes from amounts().
        self.charges = tuple(_charge(limit, 0.0, now, self._until) for limit in limits)
        picks = [
            _ONE if limit.counter is not _WINDOW else _DOLLARS if limit.in_usd else _TOKENS
            for limit in limits
        ]
        self._pick = _picker(picks)

    def holds_at(self, now: float) -> bool:
        return self._from <= now < self._until

    def amounts(self, tokens: int, cost_usd: float) -> tuple[float, ...]:
        """What a request estimated at `tokens` and `cost_usd` charges each of `charges`."""
        return self._pick((1.0, float(tokens), cost_usd))


def _picker(picks: list[int]) -> Callable[[tuple[float, float, float]], tuple[float, ...]]:
    # itemgetter picks them out in C, a third of what a comprehension costs; given one index
    # it returns the item rather than a tuple of it.
    if len(picks) > 1:
        return itemgetter(*picks)
    if picks:
        only = picks[0]
        return lambda each: (each[only],)
    return lambda each: ()


@value_object
class Adjustment:
    key: str
    counter: Counter
    delta: float
    window_end: float


def settlement_deltas(
    charges: Sequence[Charge], amounts: Sequence[float], tokens: int, cost_usd: float
) -> list[tuple[Charge, float]]:
    """What to change once the request is over, charge by charge (`amounts`: what each
    reserved): concurrency released, the reserved estimate replaced by the actual tokens and
    cost (in the window it was reserved in)."""
    deltas = []
    # Counted by hand: zip() here cost twice what the rest of the loop does.
    index = -1
    for charge in charges:
        index += 1
        counter = charge.counter
        if counter is _GAUGE:
            deltas.append((charge, -1.0))
        elif counter is _WINDOW:
            actual = cost_usd if charge.limit.in_usd else float(tokens)
            reserved = amounts[index]
            if actual != reserved:
                deltas.append((charge, actual - reserved))
    return deltas


def settlement(charges: Sequence[Charge], tokens: int, cost_usd: float) -> list[Adjustment]:
    """settlement_deltas of charges that carry their amounts, as the adjustments a store is
    sent."""
    reserved = [charge.amount for charge in charges]
    return [
        Adjustment(charge.key, charge.counter, delta, charge.window_end)
        for charge, delta in settlement_deltas(charges, reserved, tokens, cost_usd)
    ]


@value_object
class Breach:
    """Why a store refused: which charge, how much is used, and when there is room again."""

    charge: Charge
    used: float
    retry_after_s: float
