"""The batching ledger writer against an in-memory store, and the request → row mapping."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.ledger import BatchingLedger, SqliteSink
from application.record_usage import RecordUsage
from domain.ledger import GroupBy, UsageEntry
from domain.outcome import Method, RequestRecord
from domain.usage import Usage
from tests.unit.fakes import DEFAULT_NOW, FakeClock, FakeLedgerSink, usage_entry


class ListLedger:
    def __init__(self) -> None:
        self.entries: list[UsageEntry] = []

    def append(self, entry: UsageEntry) -> None:
        self.entries.append(entry)


async def _started_with_rows(sink: FakeLedgerSink, rows: int, **options: Any) -> BatchingLedger:
    """A started ledger over `sink`, given rows r0, r1, ..."""
    ledger = BatchingLedger(sink, **options)
    await ledger.start()
    for index in range(rows):
        ledger.append(usage_entry(f"r{index}"))
    return ledger


async def test_close_writes_every_queued_row_in_batches() -> None:
    sink = FakeLedgerSink()
    ledger = await _started_with_rows(sink, 25, batch_size=10, flush_interval_s=60)
    await ledger.close()
    assert [entry.request_id for entry in sink.rows] == [f"r{index}" for index in range(25)]
    assert all(len(batch) <= 10 for batch in sink.batches)
    assert (ledger.written, ledger.dropped, ledger.pending) == (25, 0, 0)
    assert sink.closed


async def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    sink = FakeLedgerSink()
    ledger = await _started_with_rows(sink, 5, batch_size=5, flush_interval_s=3600)
    for _ in range(100):
        if sink.rows:
            break
        await asyncio.sleep(0)
    assert len(sink.rows) == 5
    await ledger.close()


async def test_a_failed_write_is_retried_and_nothing_is_lost() -> None:
    sink = FakeLedgerSink(failures=2)
    ledger = BatchingLedger(sink, retry_delay_s=0, max_attempts=3)
    await ledger.start()
    ledger.append(usage_entry("r1"))
    await ledger.close()
    assert [entry.request_id for entry in sink.rows] == ["r1"]
    assert sink.attempts == 3
    assert ledger.dropped == 0


async def test_rows_that_keep_failing_are_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dropped: list[int] = []
    sink = FakeLedgerSink(failures=100)
    ledger = await _started_with_rows(
        sink, 3, retry_delay_s=0, max_attempts=2, on_dropped=dropped.append
    )
    with caplog.at_level(logging.WARNING, logger="llm_proxy.ledger"):
        await ledger.close()
    assert sink.rows == []
    assert ledger.dropped == 3
    assert sum(dropped) == 3
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "dropped 3 rows" in errors[0].getMessage()
    assert "store unavailable" in errors[0].getMessage()


async def test_a_full_queue_drops_instead_of_growing() -> None:
    dropped: list[int] = []
    sink = FakeLedgerSink()
    ledger = BatchingLedger(sink, max_queue=2, on_dropped=dropped.append)
    for index in range(5):
        ledger.append(usage_entry(f"r{index}"))
    assert (ledger.pending, ledger.dropped, dropped) == (2, 3, [1, 1, 1])


async def test_close_gives_up_on_a_stuck_store_after_its_timeout() -> None:
    sink = FakeLedgerSink()
    sink.block = asyncio.Event()
    ledger = BatchingLedger(sink, batch_size=2, close_timeout_s=0.05)
    await ledger.start()
    for index in range(5):
        ledger.append(usage_entry(f"r{index}"))
    await ledger.close()
    assert ledger.written == 0
    assert ledger.dropped == 5
    assert sink.closed


def test_a_request_becomes_one_row_stamped_with_wall_time() -> None:
    ledger = ListLedger()
    recorder = RecordUsage(ledger, FakeClock())
    recorder.request_finished(
        RequestRecord(
            method=Method.STREAM,
            transport="grpc",
            request_id="r9",
            subject="alice",
            model_id="gpt",
            outcome="CANCELLED",
            duration_s=1.5,
            usage=Usage(10, 4),
            cost_usd=0.25,
            first_chunk_s=0.1,
            team="research",
        )
    )
    assert ledger.entries == [
        UsageEntry(
            time=DEFAULT_NOW,
            request_id="r9",
            transport="grpc",
            kind="stream",
            subject="alice",
            team="research",
            model="gpt",
            outcome="CANCELLED",
            input_tokens=10,
            output_tokens=4,
            cost_usd=0.25,
            duration_s=1.5,
            first_chunk_s=0.1,
        )
    ]


async def test_sqlite_store_keeps_rows_and_sums_them_by_group(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "usage.sqlite3"
    sink = SqliteSink(path)
    await sink.open()
    try:
        await sink.write(
            [
                usage_entry("a", subject="alice", team="red", cost_usd=0.5),
                usage_entry("b", subject="alice", team="red", outcome="TIMEOUT"),
                usage_entry("c", subject="bob", team=None, input_tokens=None, cost_usd=2.0),
                usage_entry("old", subject="carol", time=DEFAULT_NOW - 100),
            ]
        )
        by_subject = await sink.totals(DEFAULT_NOW - 1, GroupBy.SUBJECT)
        by_team = await sink.totals(DEFAULT_NOW - 1, GroupBy.TEAM)
    finally:
        await sink.close()
    rows = [(t.key, t.requests, t.failed, t.input_tokens, t.output_tokens, t.cost_usd)
            for t in by_subject]  # fmt: skip
    assert rows == [("bob", 1, 0, 0, 5, 2.0), ("alice", 2, 1, 6, 10, 0.5)]
    assert [(t.key, t.requests) for t in by_team] == [(None, 1), ("red", 2)]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("SELECT COUNT(*) FROM usage").fetchone() == (4,)


async def _inserts(path: Path, batches: list[list[UsageEntry]]) -> list[str]:
    """The INSERT statements a SqliteSink at `path` runs to write `batches`, as executed."""
    sink = SqliteSink(path)
    await sink.open()
    statements: list[str] = []
    try:
        await sink._call(lambda: sink._db().set_trace_callback(statements.append))
        for batch in batches:
            await sink.write(batch)
        await sink._call(lambda: sink._db().set_trace_callback(None))
    finally:
        await sink.close()
    return [each for each in statements if each.startswith("INSERT")]


async def test_a_large_sqlite_batch_goes_in_as_a_few_statements_of_many_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.sqlite3"
    inserts = await _inserts(
        path,
        [[usage_entry(f"r{index}", input_tokens=index, cost_usd=0.5) for index in range(6000)]],
    )
    # 5 x 1,024 + 512 + 256 + 64 + 32 + 16 rows, not one statement step per row.
    assert len(inserts) == 10
    with sqlite3.connect(path) as connection:
        count, tokens, cost, ids = connection.execute(
            "SELECT COUNT(*), SUM(input_tokens), SUM(cost_usd), COUNT(DISTINCT request_id) "
            "FROM usage"
        ).fetchone()
    assert (count, tokens, cost, ids) == (6000, sum(range(6000)), 3000.0, 6000)


async def test_batches_of_any_size_use_a_few_statements_and_lose_no_row(
    tmp_path: Path,
) -> None:
    # sqlite3 keeps each distinct statement prepared, and a many-row one is megabytes: batches
    # of every size must come down to the same few statements.
    path = tmp_path / "usage.sqlite3"
    sizes = [1234, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 2000, 37, 512]
    starts = [sum(sizes[:at]) for at in range(len(sizes))]
    inserts = await _inserts(
        path,
        [
            [usage_entry(f"r{start + index}", input_tokens=1) for index in range(size)]
            for start, size in zip(starts, sizes, strict=True)
        ],
    )
    rows_per_statement = [each.split(" VALUES ")[1].count("(") for each in inserts]
    assert set(rows_per_statement) <= {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
    # 1,234 rows: 1,024 + 128 + 64 + 16 + 2.
    assert rows_per_statement[:5] == [1024, 128, 64, 16, 2]
    assert rows_per_statement[5:6] == [1]  # then a batch of one row
    with sqlite3.connect(path) as connection:
        count, tokens, ids = connection.execute(
            "SELECT COUNT(*), SUM(input_tokens), COUNT(DISTINCT request_id) FROM usage"
        ).fetchone()
    assert (count, tokens, ids) == (sum(sizes), sum(sizes), sum(sizes))


async def test_sqlite_store_that_cannot_be_opened_says_where(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"cannot open SQLite file .*file/usage\.sqlite3"):
        await SqliteSink(blocker / "usage.sqlite3").open()
