"""Use case: after a restart, budgets kept in memory start from what the ledger recorded.

Only windows still open matter: today's for daily kinds, this calendar month's for monthly
ones. Per-minute counters and concurrency start empty, as they would a minute later anyway.
"""

from __future__ import annotations

from typing import Protocol

from application.ports import UsageHistory
from domain.quota import (
    LimitKind,
    QuotaPolicy,
    applicable_limits,
    charges_for,
    window_of,
)

_REBUILT = frozenset({LimitKind.TOKENS_PER_DAY, LimitKind.USD_PER_DAY, LimitKind.USD_PER_MONTH})


class SeedableStore(Protocol):
    def seed(self, key: str, amount: float, expires: float, now: float) -> None: ...


async def rebuild_budgets(
    history: UsageHistory, store: SeedableStore, policy: QuotaPolicy, now: float
) -> int:
    """Adds the ledger's usage in the open windows to `store`; the number of counters seeded."""
    month_start = now - window_of(LimitKind.USD_PER_MONTH, now)[2]
    seeded = 0
    for day in await history.daily_usage(month_start):
        limits = [
            limit
            for limit in applicable_limits(policy, day.subject, day.team, day.model)
            if limit.kind in _REBUILT
        ]
        # The charges the day's requests made, as if they were made at the start of that day.
        moment = max(day.day_start, month_start)
        for charge in charges_for(limits, day.tokens, day.cost_usd, moment):
            if charge.window_end <= now:
                continue  # a day already over: only the month still counts it
            store.seed(charge.key, charge.amount, charge.window_end, now)
            seeded += 1
    return seeded
