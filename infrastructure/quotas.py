"""Composition of admission control: which store holds the quota counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.quota import MemoryQuotaStore
from application.admission import Admission
from application.ports import Clock, QuotaStore
from infrastructure.config.settings import QuotaSettings

if TYPE_CHECKING:
    from adapters.metrics import PrometheusObserver


def build_quota_store(settings: QuotaSettings) -> QuotaStore:
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
