"""Rows are queued by the request path and written in batches by one background task.

A slow or failing store never holds a request up: the queue is bounded, a batch that cannot be
written is retried with backoff, and rows that finally cannot be stored are dropped, counted
(`dropped`, and the on_dropped callback that feeds a metric) and logged at most once a minute.
close() writes everything still queued, for up to `close_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from domain.ledger import DailyUsage, GroupBy, UsageEntry, UsageTotal

log = logging.getLogger("llm_proxy.ledger")

DROP_LOG_INTERVAL_S = 60.0


class LedgerSink(Protocol):
    """A store of ledger rows. Calls come one at a time from the writer task."""

    async def open(self) -> None: ...

    async def write(self, rows: Sequence[UsageEntry]) -> None: ...

    async def totals(self, since: float, group_by: GroupBy) -> list[UsageTotal]: ...

    async def daily_usage(self, since: float) -> list[DailyUsage]: ...

    async def close(self) -> None: ...


class BatchingLedger:
    """Implements application.ports.UsageLedger and UsageHistory over a LedgerSink."""

    def __init__(
        self,
        sink: LedgerSink,
        *,
        batch_size: int = 2000,
        flush_interval_s: float = 1.0,
        max_queue: int = 100_000,
        max_attempts: int = 5,
        retry_delay_s: float = 0.2,
        close_timeout_s: float = 10.0,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._sink = sink
        self._batch_size = batch_size
        self._interval_s = flush_interval_s
        self._max_queue = max_queue
        self._max_attempts = max_attempts
        self._retry_delay_s = retry_delay_s
        self._close_timeout_s = close_timeout_s
        self._on_dropped = on_dropped
        self._queue: deque[UsageEntry] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self._dropped_unlogged = 0
        self._drop_logged_at = -DROP_LOG_INTERVAL_S

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        await self._sink.open()
        self._writer = asyncio.get_running_loop().create_task(self._run(), name="usage-ledger")

    def append(self, entry: UsageEntry) -> None:
        if len(self._queue) >= self._max_queue:
            self._drop(1, "the write queue is full (the store is slower than the requests)")
            return
        self._queue.append(entry)
        if len(self._queue) >= self._batch_size:
            self._wakeup.set()

    async def totals(self, since: float, group_by: GroupBy) -> list[UsageTotal]:
        return await self._sink.totals(since, group_by)

    async def daily_usage(self, since: float) -> list[DailyUsage]:
        return await self._sink.daily_usage(since)

    async def flush(self) -> None:
        """Write what is queued now (tests; the writer does this by itself)."""
        while self._queue:
            await self._write(self._take())

    async def close(self) -> None:
        """Write everything queued, for up to close_timeout_s, then close the store."""
        self._closing = True
        self._wakeup.set()
        writer = self._writer
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), self._close_timeout_s)
            except TimeoutError:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        if self._queue:
            left = len(self._queue)
            self._queue.clear()
            self._drop(left, f"the store did not take them in {self._close_timeout_s:g}s")
        if self._dropped_unlogged:
            self._log_drops(force=True)
        await self._sink.close()
        log.info("usage ledger closed: %d rows written, %d dropped", self.written, self.dropped)

    async def _run(self) -> None:
        while True:
            if len(self._queue) < self._batch_size and not self._closing:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._interval_s)
            while self._queue:
                await self._write(self._take())
            if self._closing:
                return

    def _take(self) -> list[UsageEntry]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(self._batch_size, len(queue)))]

    async def _write(self, batch: list[UsageEntry]) -> None:
        delay = self._retry_delay_s
        for attempt in range(1, self._max_attempts + 1):
            try:
                await self._sink.write(batch)
            except asyncio.CancelledError:
                # close() gave up on the store: these rows are lost too, and must be counted.
                self._drop(len(batch), f"the store did not take them in {self._close_timeout_s:g}s")
                raise
            except Exception as exc:
                if attempt == self._max_attempts:
                    self._drop(len(batch), f"writing failed {attempt} times, last: {exc}")
                    return
                log.warning(
                    "usage ledger: writing %d rows failed (attempt %d of %d), retrying in "
                    "%.1fs: %s",
                    len(batch),
                    attempt,
                    self._max_attempts,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self.written += len(batch)
                return

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._dropped_unlogged += count
        self._drop_reason = reason
        if self._on_dropped is not None:
            self._on_dropped(count)
        self._log_drops()

    def _log_drops(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drop_logged_at < DROP_LOG_INTERVAL_S:
            return
        log.error(
            "usage ledger: dropped %d rows (%d in all): %s",
            self._dropped_unlogged,
            self.dropped,
            self._drop_reason,
        )
        self._dropped_unlogged = 0
        self._drop_logged_at = now
