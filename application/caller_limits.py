"""Use case: the limits a caller is held to, and how much of each it has used."""

from __future__ import annotations

from application.ports import Clock, PolicySource, QuotaStore, QuotaStoreUnavailable
from domain.principal import Principal
from domain.quota import (
    AppliedLimit,
    Counter,
    QuotaPolicy,
    applicable_limits,
    charges_for,
)
from domain.value import value_object


@value_object
class CallerLimit:
    limit: AppliedLimit
    used: float
    # Unix seconds when the window resets; None for a sliding minute or a concurrency limit.
    resets_at: float | None

    @property
    def remaining(self) -> float:
        return max(self.limit.amount - self.used, 0.0)


@value_object
class CallerLimits:
    limits: tuple[CallerLimit, ...]
    # False when the store could not be read: every `used` is then 0, not the truth.
    usage_known: bool


def limits_of(policy: QuotaPolicy, principal: Principal) -> list[AppliedLimit]:
    """Every limit the caller is held to, those on some models only included."""
    found = applicable_limits(policy, principal.subject, principal.team, None)
    globs = {models for rule in (*policy.subjects, *policy.teams) for models, _ in rule.models}
    for models in sorted(globs):
        # A glob matches itself; the limits on exactly that glob are the ones it names.
        found += [
            limit
            for limit in applicable_limits(policy, principal.subject, principal.team, models)
            if limit.models == models
        ]
    return found


class DescribeCallerLimits:
    def __init__(self, policy: PolicySource, store: QuotaStore, clock: Clock) -> None:
        self._policy = policy
        self._store = store
        self._clock = clock

    async def __call__(self, principal: Principal) -> CallerLimits:
        limits = limits_of(self._policy.current().quotas, principal)
        if not limits:
            return CallerLimits((), True)
        now = self._clock.now()
        charges = charges_for(limits, 0, 0.0, now)
        try:
            used = await self._store.usage(charges, now)
            known = True
        except QuotaStoreUnavailable:
            used, known = [0.0] * len(charges), False
        return CallerLimits(
            tuple(
                CallerLimit(
                    charge.limit,
                    value,
                    charge.window_end if charge.counter is Counter.WINDOW else None,
                )
                for charge, value in zip(charges, used, strict=True)
            ),
            known,
        )
