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

from application.stream_prompt import OpenedStream
from domain.errors import ClientTooSlow

# How often a stream's sends are looked at, at most; small timeouts are looked at more often.
CHECK_INTERVAL_S = 1.0


class ReadWatch:
    """Watches the sends of one stream. Call sending() before each send, sent() after it."""

    __slots__ = ("_deadline", "_handle", "_loop", "_opened", "_started", "_task", "since")

    def __init__(self, opened: OpenedStream) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._opened = opened
        self._started = self._loop.time()
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        # loop.time() when the send in progress began; None between sends.
        self.since: float | None = None

    def sending(self) -> None:
        self.since = self._loop.time()
        if self._handle is None:
            self._arm()

    def sent(self) -> None:
        self.since = None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        read_timeout = self._opened.read_timeout_s
        timeout = self._opened.timeout_s
        if read_timeout is None or timeout is None:
            # Not admitted (yet): nothing is sent but the refusal, which grpc bounds itself.
            return
        self._deadline = self._started + timeout
        interval = min(CHECK_INTERVAL_S, read_timeout / 4, timeout / 4)
        self._handle = self._loop.call_later(interval, self._check, interval, read_timeout)

    def _check(self, interval: float, read_timeout: float) -> None:
        since = self.since
        now = self._loop.time()
        reason: ClientTooSlow | None = None
        if since is not None and now - since >= read_timeout:
            reason = ClientTooSlow(
                f"the client read nothing for {read_timeout:g}s, so the stream was cancelled; "
                "read streams as they arrive (the server's limit is "
                "limits.client_read_timeout_seconds)"
            )
        elif since is not None and self._deadline is not None and now >= self._deadline:
            reason = ClientTooSlow(
                f"the answer was not read within the request timeout of "
                f"{self._opened.timeout_s:g}s, so the stream was cancelled"
            )
        if reason is None:
            self._handle = self._loop.call_later(interval, self._check, interval, read_timeout)
            return
        self._handle = None
        self._opened.give_up(reason)
        if self._task is not None:
            self._task.cancel()
