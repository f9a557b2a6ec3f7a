"""Ends a stream whose client stops reading it.

grpc.aio sends a streamed message by awaiting HTTP/2 flow control: a client that never opens
its window (or never reads its socket) holds that await, and with it the call, its admission
slot and the model behind it, for as long as it likes. Nothing inside the handler runs while it
waits, so a timer checks from outside: a send that has waited longer than the stream's read
timeout, or past the stream's whole deadline, cancels the handler's task. grpc then closes the
handler, which ends the request; the status it is recorded with says why.

A message already handed to grpc cannot be taken back, so no status can follow it to the
client: the stream is reset instead (the client sees CANCELLED, if it ever reads again).
"""

from __future__ import annotations

import asyncio
import time
import weakref

from application.stream_prompt import OpenedStream
from domain.errors import ClientTooSlow

# How often a stream's sends are looked at, at most; small timeouts are looked at more often.
CHECK_INTERVAL_S = 1.0


class ReadWatch:
    """Watches the sends of one stream. Call sending() before each send, sent() after it."""

    __slots__ = (
        "_deadline",
        "_interval",
        "_opened",
        "_read_timeout",
        "_started",
        "_sweeper",
        "_task",
        "since",
    )

    def __init__(self, opened: OpenedStream) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = _Sweeper.of(loop)
        self._task = asyncio.current_task(loop)
        self._opened = opened
        self._started = time.monotonic()
        self._deadline: float | None = None
        self._read_timeout = 0.0
        self._interval = 0.0
        # time.monotonic() when the send in progress began; None between sends.
        self.since: float | None = None

    def sending(self) -> None:
        self.since = time.monotonic()
        if self._deadline is None:
            self._arm()

    def sent(self) -> None:
        self.since = None

    def stop(self) -> None:
        self._sweeper.discard(self)

    def _arm(self) -> None:
        read_timeout = self._opened.read_timeout_s
        timeout = self._opened.timeout_s
        if read_timeout is None or timeout is None:
            # Not admitted (yet): nothing is sent but the refusal, which grpc bounds itself.
            return
        self._deadline = self._started + timeout
        self._read_timeout = read_timeout
        self._interval = min(CHECK_INTERVAL_S, read_timeout / 4, timeout / 4)
        self._sweeper.add(self)

    def _overdue(self, now: float) -> ClientTooSlow | None:
        since = self.since
        if since is None:
            return None
        if now - since >= self._read_timeout:
            return ClientTooSlow(
                f"the client read nothing for {self._read_timeout:g}s, so the stream was "
                "cancelled; read streams as they arrive (the server's limit is "
                "limits.client_read_timeout_seconds)"
            )
        if self._deadline is not None and now >= self._deadline:
            return ClientTooSlow(
                f"the answer was not read within the request timeout of "
                f"{self._opened.timeout_s:g}s, so the stream was cancelled"
            )
        return None

    def _give_up(self, reason: ClientTooSlow) -> None:
        self._opened.give_up(reason)
        if self._task is not None:
            self._task.cancel()


class _Sweeper:
    """One timer per event loop looks at every watched stream, rather than a timer per stream
    armed and cancelled on every request (that cost a stream ~20k instructions)."""

    _of_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        # Nothing here refers to the loop (it is the key this sweeper is found by, weakly):
        # not even the pending sweep's handle, which would keep a finished loop alive. Times
        # are time.monotonic(), the loop's own clock.
        self._watched: set[ReadWatch] = set()
        self._interval = CHECK_INTERVAL_S
        self._pending = False
        # A sweep scheduled before a shorter interval came along finds itself outdated.
        self._generation = 0

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Sweeper:
        sweeper = cls._of_loop.get(loop)
        if sweeper is None:
            sweeper = cls._of_loop[loop] = cls()
        return sweeper

    def add(self, watch: ReadWatch) -> None:
        self._watched.add(watch)
        if not self._pending or watch._interval < self._interval:
            # Nothing scheduled yet, or a stream with shorter timeouts: looked at as often as
            # it needs from now on.
            self._schedule(watch._interval)

    def discard(self, watch: ReadWatch) -> None:
        self._watched.discard(watch)

    def _schedule(self, interval: float) -> None:
        self._interval = interval
        self._generation += 1
        self._pending = True
        asyncio.get_running_loop().call_later(interval, self._sweep, self._generation)

    def _sweep(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._pending = False
        now = time.monotonic()
        for watch in list(self._watched):
            reason = watch._overdue(now)
            if reason is not None:
                self._watched.discard(watch)
                watch._give_up(reason)
        if self._watched:
            self._schedule(min(watch._interval for watch in self._watched))
