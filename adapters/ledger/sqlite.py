"""The ledger in an embedded SQLite file: WAL, one writer thread, one transaction per batch.

Several worker processes may share one file: WAL lets readers (`usage report`) run beside
the writers, and writers wait for each other for up to BUSY_TIMEOUT_MS.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from adapters.ledger.columns import COLUMNS, GROUP_COLUMNS, Row, as_row
from domain.ledger import DailyUsage, GroupBy, UsageEntry, UsageTotal

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    time REAL NOT NULL,
    request_id TEXT NOT NULL,
    transport TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    team TEXT,
    model TEXT,
    outcome TEXT NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd REAL,
    duration_s REAL NOT NULL,
    first_chunk_s REAL
);
CREATE INDEX IF NOT EXISTS usage_time ON usage (time);
CREATE INDEX IF NOT EXISTS usage_subject_time ON usage (subject, time);
CREATE INDEX IF NOT EXISTS usage_team_time ON usage (team, time);
"""

# A batch goes in as a few statements of many rows each, not as executemany's one statement
# step per row: sqlite3 lets go of the GIL around every step, and on a busy server each time
# costs a hand-over to the event loop's thread and a wait to get the GIL back, which per row
# cost the server more than the insert itself (measured: 9% more server CPU per request with
# the ledger on, at c=16; four statements of 500 rows per batch still cost the writer thread
# 6-8 µs of system time per request).
#
# The statements' row counts are powers of two, largest first (a batch of n rows takes as
# many statements as n has bits set), and a last odd row goes in alone: sqlite3 keeps every
# distinct statement it ran prepared (up to 128), a prepared 2,500-row INSERT holds about
# 3 MiB, and with any row count allowed the server grew by 64 MiB over one bench run, while
# preparing a statement for each batch instead cost the writer thread more than the inserts.
STATEMENT_ROWS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2)


@functools.lru_cache(maxsize=len(STATEMENT_ROWS) + 1)
def _insert(rows: int) -> str:
    one = f"({', '.join('?' for _ in COLUMNS)})"
    return f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)}"  # noqa: S608


class SqliteSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        # One thread owns the connection: sqlite3 objects stay on the thread that made them,
        # and the event loop never waits for the disk.
        self._thread: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._statement_rows: tuple[int, ...] = ()

    async def _call(self, work: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("the SQLite ledger is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ledger-sqlite")
        try:
            await self._call(self._connect)
        except (OSError, sqlite3.Error) as exc:
            self._thread.shutdown()
            self._thread = None
            raise OSError(f"usage ledger: cannot open SQLite file {self.path}: {exc}") from exc

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed batch survives a process crash (not a power loss).
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        connection.executescript(_SCHEMA)
        # Within this SQLite build's limit on parameters per statement (999 in old builds).
        most = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS)
        self._statement_rows = tuple(
            sorted({min(rows, most) for rows in STATEMENT_ROWS if most > 1}, reverse=True)
        )
        self._connection = connection

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the SQLite ledger is not open")
        return self._connection

    async def write(self, rows: Sequence[UsageEntry]) -> None:
        values = [as_row(entry) for entry in rows]

        def insert() -> None:
            connection = self._db()
            with connection:
                self._insert_rows(connection, values)

        await self._call(insert)

    def _insert_rows(self, connection: sqlite3.Connection, rows: list[Row]) -> None:
        start = 0
        for size in self._statement_rows:
            while len(rows) - start >= size:
                chunk = rows[start : start + size]
                connection.execute(_insert(size), [value for row in chunk for value in row])
                start += size
        if start < len(rows):
            connection.executemany(_insert(1), rows[start:])

    async def totals(self, since: float, group_by: GroupBy) -> list[UsageTotal]:
        column = GROUP_COLUMNS[group_by]
        query = (
            f"SELECT {column}, COUNT(*), SUM(outcome != 'ok'), "  # noqa: S608 - fixed names
            "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            f"COALESCE(SUM(cost_usd), 0) FROM usage WHERE time >= ? GROUP BY {column} "
            "ORDER BY 6 DESC, 2 DESC"
        )

        def select() -> list[UsageTotal]:
            rows = self._db().execute(query, (since,)).fetchall()
            return [UsageTotal(row[0], row[1], row[2], row[3], row[4], row[5]) for row in rows]

        return await self._call(select)

    async def daily_usage(self, since: float) -> list[DailyUsage]:
        query = (
            "SELECT CAST(time / 86400 AS INTEGER) * 86400, subject, team, model, "
            "COALESCE(SUM(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)), 0), "
            "COALESCE(SUM(cost_usd), 0) FROM usage WHERE time >= ? GROUP BY 1, 2, 3, 4"
        )

        def select() -> list[DailyUsage]:
            rows = self._db().execute(query, (since,)).fetchall()
            return [DailyUsage(float(r[0]), r[1], r[2], r[3], int(r[4]), float(r[5])) for r in rows]

        return await self._call(select)

    async def close(self) -> None:
        if self._thread is None:
            return

        def disconnect() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await self._call(disconnect)
        self._thread.shutdown(wait=True)
        self._thread = None
