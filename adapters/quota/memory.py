"""Quota counters in this process's memory: the default store for one server process, and the
store a `--workers` supervisor keeps for all its workers (adapters.quota.shared)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from domain.quota import Adjustment, Breach, Charge, Counter

# Read once: an enum member read off its class runs Python code, per counter per request.
_LOG, _GAUGE = Counter.LOG, Counter.GAUGE

# Expired windows and empty logs are swept once this many keys exist, so memory stays bounded
# by the callers active in the longest window rather than growing with every caller ever seen.
SWEEP_AT = 10_000


class MemoryQuotaStore:
    local = True

    def __init__(self) -> None:
        self._logs: dict[str, deque[float]] = {}
        # key -> [value, unix time it expires]
        self._values: dict[str, list[float]] = {}
        self._sweep_at = SWEEP_AT

    @property
    def tracked_keys(self) -> int:
        """How many counters are held: what the sweep keeps bounded."""
        return len(self._logs) + len(self._values)

    async def reserve(self, charges: Sequence[Charge], now: float) -> Breach | None:
        return self.reserve_now(charges, now)

    async def adjust(self, adjustments: Sequence[Adjustment], now: float) -> None:
        self.adjust_now(adjustments, now)

    async def usage(self, charges: Sequence[Charge], now: float) -> list[float]:
        return [self._used(charge, now) for charge in charges]

    def used_now(self, charge: Charge, now: float) -> float:
        return self._used(charge, now)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def reserve_now(self, charges: Sequence[Charge], now: float) -> Breach | None:
        return self.reserve_amounts(charges, [charge.amount for charge in charges], now)

    def reserve_amounts(
        self, charges: Sequence[Charge], amounts: Sequence[float], now: float
    ) -> Breach | None:
        # All or none: each counter is checked and moved in one pass, and a breach takes back
        # what the charges before it moved. Nothing else runs in between (no await), so no
        # one sees the charges half made; refusals are rare, so the common case makes one
        # pass and looks each counter up once.
        logs = self._logs
        values = self._values
        index = -1
        for charge in charges:
            index += 1
            amount = amounts[index]
            limit = charge.limit.amount
            if charge.counter is _LOG:
                log = logs.get(charge.key)
                if log is None:
                    log = logs[charge.key] = deque()
                    used = 0.0
                else:
                    used = self._trimmed(log, now - charge.window_s)
                if used + amount > limit:
                    return self._refuse(charges, amounts, index, used, now)
                log.append(now)
                continue
            entry = values.get(charge.key)
            if entry is None or entry[1] <= now:
                if amount > limit:
                    return self._refuse(charges, amounts, index, 0.0, now)
                values[charge.key] = [amount if amount > 0.0 else 0.0, charge.window_end]
                continue
            used = entry[0]
            if used + amount > limit:
                return self._refuse(charges, amounts, index, used, now)
            value = used + amount
            entry[0] = value if value > 0.0 else 0.0
            if charge.window_end > entry[1]:
                entry[1] = charge.window_end
        if len(logs) + len(values) > self._sweep_at:
            self._sweep(now)
        return None

    def _refuse(
        self,
        charges: Sequence[Charge],
        amounts: Sequence[float],
        index: int,
        used: float,
        now: float,
    ) -> Breach:
        """The breach of charges[index], once the charges before it are taken back."""
        charge = charges[index]
        if charge.amount != amounts[index]:
            # A plan's charge: the breach names what this request would have charged.
            charge = replace(charge, amount=amounts[index])
        breach = Breach(charge, used, self._retry_after(charge, used, now))
        for charge, amount in zip(charges[:index], amounts, strict=False):
            if charge.counter is _LOG:
                self._logs[charge.key].pop()
            else:
                entry = self._values[charge.key]
                entry[0] = max(entry[0] - amount, 0.0)
        return breach

    def adjust_now(self, adjustments: Sequence[Adjustment], now: float) -> None:
        for adjustment in adjustments:
            self._add(adjustment.key, adjustment.delta, adjustment.window_end, now)

    def settle_now(self, deltas: Sequence[tuple[Charge, float]], now: float) -> None:
        """adjust_now for what a request's own charges turned out to be (settlement_deltas)."""
        for charge, delta in deltas:
            self._add(charge.key, delta, charge.window_end, now)

    @staticmethod
    def _trimmed(log: deque[float], horizon: float) -> float:
        """Requests still in the log's window, once those before `horizon` are dropped."""
        while log and log[0] <= horizon:
            log.popleft()
        return float(len(log))

    def _used(self, charge: Charge, now: float) -> float:
        if charge.counter is _LOG:
            log = self._logs.get(charge.key)
            return self._trimmed(log, now - charge.window_s) if log is not None else 0.0
        entry = self._values.get(charge.key)
        if entry is None or entry[1] <= now:
            return 0.0
        return entry[0]

    def _retry_after(self, charge: Charge, used: float, now: float) -> float:
        if charge.counter is _LOG:
            log = self._logs[charge.key]
            # The entry whose expiry makes room for one more request.
            index = max(int(used - charge.limit.amount), 0)
            return max(log[index] + charge.window_s - now, 0.001)
        if charge.counter is _GAUGE:
            return 1.0
        return max(charge.window_end - now, 0.001)

    def _add(self, key: str, delta: float, expires: float, now: float) -> None:
        entry = self._values.get(key)
        if entry is None or entry[1] <= now:
            entry = self._values[key] = [0.0, expires]
        # A gauge never goes below zero, even if a settle arrives after its key expired.
        # (Comparisons rather than max(): this runs for every settled request.)
        value = entry[0] + delta
        entry[0] = value if value > 0.0 else 0.0
        if expires > entry[1]:
            entry[1] = expires

    def _sweep(self, now: float) -> None:
        for key in [key for key, log in self._logs.items() if not log or log[-1] <= now - 60]:
            del self._logs[key]
        for key in [key for key, (value, expires) in self._values.items() if expires <= now]:
            del self._values[key]
        # Many keys still live: sweep again after SWEEP_AT more, so sweeping stays amortised.
        self._sweep_at = self.tracked_keys + SWEEP_AT

    def seed(self, key: str, amount: float, expires: float, now: float) -> None:
        """Add usage recorded elsewhere (the ledger, at start) to a window's counter."""
        self._add(key, amount, expires, now)
