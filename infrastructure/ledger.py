"""Composition of the usage ledger: which store, where, and how it is opened and closed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.ledger import BatchingLedger, LedgerSink, SqliteSink
from application.ports import Clock
from application.record_usage import RecordUsage
from infrastructure.config.settings import LedgerSettings

if TYPE_CHECKING:
    from adapters.metrics import PrometheusObserver

LEDGER_FILE = "usage.sqlite3"


def default_sqlite_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llm-proxy" / LEDGER_FILE


def sqlite_path(settings: LedgerSettings) -> Path:
    return Path(settings.path).expanduser() if settings.path else default_sqlite_path()


def build_sink(settings: LedgerSettings) -> LedgerSink | None:
    if settings.backend == "none":
        return None
    if settings.backend == "postgres":
        # Imported here: asyncpg is needed only by servers that use PostgreSQL.
        from adapters.ledger.postgres import PostgresSink

        assert settings.postgres_dsn is not None  # the schema requires it for this backend
        return PostgresSink(settings.postgres_dsn)
    return SqliteSink(sqlite_path(settings))


def build_ledger(
    settings: LedgerSettings, metrics: PrometheusObserver | None
) -> BatchingLedger | None:
    sink = build_sink(settings)
    if sink is None:
        return None
    return BatchingLedger(
        sink,
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_seconds,
        max_queue=settings.max_queue,
        max_attempts=settings.max_attempts,
        close_timeout_s=settings.close_timeout_seconds,
        on_dropped=metrics.ledger_rows_dropped if metrics is not None else None,
    )


def build_usage_recorder(ledger: BatchingLedger | None, clock: Clock) -> RecordUsage | None:
    return RecordUsage(ledger, clock) if ledger is not None else None
