"""Request deadlines checked by one periodic look over all of them, instead of a timer each.

`asyncio.timeout` costs a TimerHandle, a heap push and a cancel every time it is entered (about
5 µs), and a stream entered one per model wait; that was a visible share of a request's own
cost. Here arming a deadline is a set insert and disarming a removal; one loop timer, running
only while some deadline is armed, cancels the tasks whose deadline has passed. The price is
precision: a deadline fires up to `resolution_s` late, which no request timeout notices.

Cancellation works as with `asyncio.timeout`: the task is cancelled, so the CancelledError
reaches whatever it awaits (the model call stops), and `Deadline.expired` tells the code that
catches it whether it was this deadline (then it raises its timeout error) or a cancel from
elsewhere (then it re-raises).
"""

from __future__ import annotations

import asyncio
import math
import time

# How late a deadline may fire: far below any request timeout, and few enough wake-ups
# (50 a second, only while requests are in flight) to cost nothing measurable.
RESOLUTION_S = 0.02


class Deadline:
    __slots__ = ("_cancelling", "_fired", "_task", "at", "waiting")

    def __init__(self, at: float, task: asyncio.Task[object], *, waiting: bool) -> None:
        self.at = at
        self._task = task
        # What the task's cancel count was before this deadline: a cancel from elsewhere
        # meanwhile is not swallowed as a timeout.
        self._cancelling = task.cancelling()
        # Only a deadline whose task is waiting (for the model) is fired; a stream's task is
        # left alone while its consumer sends, and its next wait checks the deadline itself.
        self.waiting = waiting
        self._fired = False

    def passed(self, now: float) -> bool:
        return now >= self.at

    def fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def expired(self) -> bool:
        """Called while handling a CancelledError: whether it was this deadline's. If so the
        cancel is taken back, so the task can go on to report the timeout."""
        return self._fired and self._task.uncancel() <= self._cancelling


class DeadlineWatch:
    """Cancels the task of each armed deadline once it has passed; looks every `resolution_s`."""

    def __init__(self, resolution_s: float = RESOLUTION_S) -> None:
        self._resolution_s = resolution_s
        self._armed: set[Deadline] = set()
        # No armed deadline passes before this: until then a look costs one comparison,
        # however many requests are in flight.
        self._earliest = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, timeout_s: float, *, waiting: bool = True) -> Deadline:
        """A deadline `timeout_s` from now for the current task; disarm() it when done."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs a task to cancel")
        if loop is not self._loop:
            # A new event loop (tests run one after another): the old one's state is void.
            self._loop = loop
            self._armed = set()
            self._earliest = math.inf
            self._timer = None
        deadline = Deadline(time.monotonic() + max(timeout_s, 0.0), task, waiting=waiting)
        self._armed.add(deadline)
        self._earliest = min(self._earliest, deadline.at)
        if self._timer is None:
            self._timer = loop.call_later(self._resolution_s, self._check)
        return deadline

    def wait(self, deadline: Deadline, timeout_s: float) -> None:
        """`deadline`'s task starts waiting again, for at most `timeout_s` from now."""
        deadline.at = time.monotonic() + timeout_s
        deadline.waiting = True
        self._earliest = min(self._earliest, deadline.at)

    def disarm(self, deadline: Deadline) -> None:
        self._armed.discard(deadline)

    def _check(self) -> None:
        loop = self._loop
        assert loop is not None
        now = time.monotonic()
        if now >= self._earliest:
            passed = [each for each in self._armed if each.waiting and each.passed(now)]
            for deadline in passed:
                self._armed.discard(deadline)
                deadline.fire()
            self._earliest = min((each.at for each in self._armed), default=math.inf)
        self._timer = loop.call_later(self._resolution_s, self._check) if self._armed else None
