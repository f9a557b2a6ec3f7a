"""The deadline watch that bounds model waits: fires late by at most its resolution, only for
its own task, only while that task waits, and never after being disarmed."""

from __future__ import annotations

import asyncio
import time

import pytest

from application.deadline import DeadlineWatch

RESOLUTION_S = 0.01


async def _wait_under(watch: DeadlineWatch, timeout_s: float, work_s: float) -> str:
    deadline = watch.arm(timeout_s)
    try:
        await asyncio.sleep(work_s)
        return "done"
    except asyncio.CancelledError:
        if deadline.expired():
            return "timed out"
        raise
    finally:
        watch.disarm(deadline)


async def test_a_passed_deadline_cancels_the_wait_and_says_so() -> None:
    watch = DeadlineWatch(RESOLUTION_S)
    began = time.monotonic()

    outcome = await _wait_under(watch, 0.05, 30)

    assert outcome == "timed out"
    took = time.monotonic() - began
    assert 0.05 <= took < 5
    # The cancel was taken back: the task goes on as if never cancelled.
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_work_that_ends_in_time_is_not_touched() -> None:
    watch = DeadlineWatch(RESOLUTION_S)

    assert await _wait_under(watch, 5, 0.01) == "done"
    # Disarmed: long after its time, nothing is cancelled.
    await asyncio.sleep(0.05)


async def test_a_disarmed_deadline_never_fires() -> None:
    watch = DeadlineWatch(RESOLUTION_S)
    deadline = watch.arm(0.02)
    watch.disarm(deadline)

    await asyncio.sleep(0.1)

    assert not deadline.expired()


async def test_a_cancel_from_elsewhere_is_not_taken_for_a_timeout() -> None:
    watch = DeadlineWatch(RESOLUTION_S)
    task = asyncio.create_task(_wait_under(watch, 30, 30))
    await asyncio.sleep(0.02)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_elsewhere_after_the_deadline_fired_still_cancels() -> None:
    # Both happened: the task must end cancelled, as with asyncio.timeout.
    watch = DeadlineWatch(RESOLUTION_S)
    seen: list[str] = []

    async def work() -> None:
        deadline = watch.arm(0.01)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("expired" if deadline.expired() else "cancelled")
            raise
        finally:
            watch.disarm(deadline)

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    task.cancel()  # pending, from elsewhere, before the deadline fires
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_a_deadline_fires_only_while_its_task_waits() -> None:
    watch = DeadlineWatch(RESOLUTION_S)
    deadline = watch.arm(0.02, waiting=False)
    try:
        # Busy elsewhere (a stream's consumer sending) past the deadline: left alone.
        await asyncio.sleep(0.1)
        assert deadline.passed(time.monotonic())

        watch.wait(deadline, 0.02)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(30)
        assert deadline.expired()
    finally:
        watch.disarm(deadline)


def test_one_watch_serves_one_event_loop_after_another() -> None:
    watch = DeadlineWatch(RESOLUTION_S)

    first = asyncio.run(_wait_under(watch, 0.02, 30))
    second = asyncio.run(_wait_under(watch, 0.02, 30))

    assert (first, second) == ("timed out", "timed out")


async def test_a_deadline_needs_a_task() -> None:
    watch = DeadlineWatch(RESOLUTION_S)
    loop = asyncio.get_running_loop()
    failures: list[BaseException] = []

    def outside_any_task() -> None:
        try:
            watch.arm(1)
        except RuntimeError as error:
            failures.append(error)

    loop.call_soon(outside_any_task)
    await asyncio.sleep(0.01)

    assert len(failures) == 1 and "task" in str(failures[0])


async def test_a_deadline_brought_forward_fires_at_its_new_time() -> None:
    # Armed far off (as many requests are), then waited on with little time left.
    watch = DeadlineWatch(RESOLUTION_S)
    others = [watch.arm(300) for _ in range(3)]
    deadline = watch.arm(300, waiting=False)
    began = time.monotonic()
    try:
        watch.wait(deadline, 0.03)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(30)
        assert deadline.expired()
        assert time.monotonic() - began < 5
    finally:
        for each in [*others, deadline]:
            watch.disarm(each)
