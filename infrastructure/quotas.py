"""Composition of admission control: which store holds the quota counters."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from adapters.grpc.health import GrpcHealth
from adapters.quota import MemoryQuotaStore
from application.admission import Admission
from application.ports import Clock, QuotaStore, QuotaStoreUnavailable, UsageHistory
from application.rebuild_budgets import rebuild_budgets
from domain.quota import QuotaPolicy
from infrastructure.config.settings import QuotaSettings
from infrastructure.observability import WORKER
from infrastructure.supervisor import QUOTA_SOCKET_ENV

if TYPE_CHECKING:
    from adapters.metrics import PrometheusObserver

log = logging.getLogger("llm_proxy.admission")

STORE_CHECK_INTERVAL_S = 2.0


def build_quota_store(settings: QuotaSettings, role: str) -> QuotaStore:
    if settings.store == "redis":
        # Imported here: the redis client is needed only by servers that use it.
        from adapters.quota.redis import RedisQuotaStore

        assert settings.redis_url is not None  # the schema requires it for this store
        return RedisQuotaStore(
            settings.redis_url,
            prefix=settings.redis_key_prefix,
            timeout_s=settings.redis_timeout_seconds,
        )
    socket = os.environ.get(QUOTA_SOCKET_ENV)
    if role == WORKER and socket:
        # One of `serve --workers N`: the counters are the supervisor's, shared by all.
        from adapters.quota.shared import SharedQuotaStore

        return SharedQuotaStore(socket)
    return MemoryQuotaStore()


def build_admission(
    store: QuotaStore,
    clock: Clock,
    settings: QuotaSettings,
    metrics: PrometheusObserver | None,
) -> Admission:
    return Admission(
        store,
        clock,
        fail_open=settings.on_store_error == "fail_open",
        on_fail_open=metrics.limits_fail_open if metrics is not None else None,
    )


async def watch_store(
    store: QuotaStore,
    admission: Admission,
    health: GrpcHealth | None,
    settings: QuotaSettings,
    interval_s: float = STORE_CHECK_INTERVAL_S,
) -> None:
    """Keep the health service's view of the limits store current, with or without traffic."""
    fail_closed = settings.on_store_error == "fail_closed"
    reachable: bool | None = None
    while True:
        try:
            await store.check()
            now_reachable = True
        except QuotaStoreUnavailable as exc:
            now_reachable = False
            if reachable is not False:
                log.error("limits store unreachable: %s", exc)
        if now_reachable and reachable is False:
            log.warning("limits store reachable again")
        if now_reachable != reachable:
            reachable = now_reachable
            admission.store_unavailable = not reachable
            if health is not None:
                await health.limits_reachable(reachable, fail_closed=fail_closed)
        await asyncio.sleep(interval_s)


async def rebuild_from_ledger(
    store: MemoryQuotaStore, history: UsageHistory, policy: QuotaPolicy
) -> None:
    """Budgets in memory survive a restart: today's and this month's usage from the ledger."""
    if not any(
        limit_set.items()
        for limit_set in (
            policy.default,
            *(rule.limits for rule in (*policy.subjects, *policy.teams)),
            *(limits for rule in (*policy.subjects, *policy.teams) for _, limits in rule.models),
        )
    ):
        return
    try:
        seeded = await rebuild_budgets(history, store, policy, time.time())
    except Exception as exc:  # the server still serves; budgets then start from zero
        log.error("could not rebuild budgets from the usage ledger: %s", exc)
        return
    log.info("budgets rebuilt from the usage ledger: %d counters", seeded)
