"""The ledger in PostgreSQL, for several replicas: asyncpg, one COPY per batch.

The schema is created by `llm-proxy ledger migrate` (migrate() here), not by the server: a
server finding it missing refuses to start and says which command to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from adapters.ledger.columns import COLUMNS, GROUP_COLUMNS, as_row
from domain.ledger import DailyUsage, GroupBy, UsageEntry, UsageTotal

TABLE = "llm_proxy_usage"
VERSION_TABLE = "llm_proxy_schema"
# Serialises concurrent `migrate` runs (two replicas' init containers, say).
_MIGRATION_LOCK = 7_213_001

# Each step runs once, in order, in one transaction with the version bump. Append only.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE {TABLE} (
        time timestamptz NOT NULL,
        request_id text NOT NULL,
        transport text NOT NULL,
        kind text NOT NULL,
        subject text NOT NULL,
        team text,
        model text,
        outcome text NOT NULL,
        input_tokens bigint,
        output_tokens bigint,
        cost_usd double precision,
        duration_s double precision NOT NULL,
        first_chunk_s double precision
    );
    CREATE INDEX {TABLE}_time ON {TABLE} (time);
    CREATE INDEX {TABLE}_subject_time ON {TABLE} (subject, time);
    CREATE INDEX {TABLE}_team_time ON {TABLE} (team, time);
    """,
)


class LedgerNotReady(OSError):
    """The database cannot hold the ledger yet; the message says what to do."""


def describe(dsn: str) -> str:
    """Where a DSN points, without its password, for messages."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


async def migrate(dsn: str) -> list[int]:
    """Bring the schema up to date; the versions applied now (empty when it already was)."""
    try:
        connection = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise LedgerNotReady(str(exc)) from exc
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer NOT NULL)"
            )
            current = await connection.fetchval(
                f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"  # noqa: S608
            )
            applied = []
            for version, statement in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                await connection.execute(statement)
                await connection.execute(
                    f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)",  # noqa: S608
                    version,
                )
                applied.append(version)
            return applied
    finally:
        await connection.close()


async def schema_version(connection: Any) -> int:
    exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE)
    if not exists:
        return 0
    version: int = await connection.fetchval(
        f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"  # noqa: S608
    )
    return version


class PostgresSink:
    def __init__(self, dsn: str, *, pool_size: int = 2) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        where = describe(self._dsn)
        try:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise LedgerNotReady(
                f"usage ledger: cannot reach PostgreSQL at {where}: {exc}"
            ) from exc
        async with self._pool.acquire() as connection:
            version = await schema_version(connection)
        if version < len(MIGRATIONS):
            await self._pool.close()
            self._pool = None
            raise LedgerNotReady(
                f"usage ledger: the database at {where} is at schema version {version}, this "
                f"server needs {len(MIGRATIONS)}; run `llm-proxy ledger migrate` first"
            )

    async def write(self, rows: Sequence[UsageEntry]) -> None:
        records = [_record(entry) for entry in rows]
        async with self._pool.acquire() as connection:
            await connection.copy_records_to_table(TABLE, records=records, columns=COLUMNS)

    async def totals(self, since: float, group_by: GroupBy) -> list[UsageTotal]:
        column = GROUP_COLUMNS[group_by]
        query = (
            f"SELECT {column}, COUNT(*), COUNT(*) FILTER (WHERE outcome <> 'ok'), "  # noqa: S608
            "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            f"COALESCE(SUM(cost_usd), 0) FROM {TABLE} WHERE time >= to_timestamp($1) "
            f"GROUP BY {column} ORDER BY 6 DESC, 2 DESC"
        )
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(query, since)
        return [
            UsageTotal(row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4]), float(row[5]))
            for row in rows
        ]

    async def daily_usage(self, since: float) -> list[DailyUsage]:
        query = (
            "SELECT floor(extract(epoch FROM time) / 86400) * 86400, subject, team, model, "  # noqa: S608
            "COALESCE(SUM(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)), 0), "
            f"COALESCE(SUM(cost_usd), 0) FROM {TABLE} WHERE time >= to_timestamp($1) "
            "GROUP BY 1, 2, 3, 4"
        )
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(query, since)
        return [DailyUsage(float(r[0]), r[1], r[2], r[3], int(r[4]), float(r[5])) for r in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _record(entry: UsageEntry) -> tuple[Any, ...]:
    row = as_row(entry)
    return (datetime.fromtimestamp(row[0], UTC), *row[1:])
