"""The read watch: a stream whose send waits longer than the read timeout, or past the whole
request timeout, is given up and its task cancelled; streams that read, or have stopped, are
left alone. One sweeper serves every stream of an event loop."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from adapters.grpc.read_watch import ReadWatch
from domain.errors import ClientTooSlow, ProxyError


class _Opened:
    def __init__(self, read_timeout_s: float | None, timeout_s: float | None) -> None:
        self.read_timeout_s = read_timeout_s
        self.timeout_s = timeout_s
        self.given_up: ProxyError | None = None

    def give_up(self, reason: ProxyError) -> None:
        self.given_up = reason


async def _stream(opened: _Opened, sends: list[float]) -> str:
    """Sends that each take the given seconds (a stalled client takes long)."""
    watch = ReadWatch(opened)  # type: ignore[arg-type]
    try:
        for seconds in sends:
            watch.sending()
            await asyncio.sleep(seconds)
            watch.sent()
        return "finished"
    except asyncio.CancelledError:
        return "cancelled"
    finally:
        watch.stop()


async def test_a_stalled_send_is_given_up_and_the_others_go_on() -> None:
    stalled, reading = _Opened(0.08, 30), _Opened(0.08, 30)

    outcomes = await asyncio.gather(_stream(stalled, [0.01, 30]), _stream(reading, [0.01] * 15))

    assert list(outcomes) == ["cancelled", "finished"]
    assert isinstance(stalled.given_up, ClientTooSlow)
    assert "read nothing for 0.08s" in stalled.given_up.message
    assert reading.given_up is None


async def test_a_stream_sending_past_the_request_timeout_is_given_up() -> None:
    opened = _Opened(read_timeout_s=30, timeout_s=0.1)

    # Each send is quick, but the stream as a whole outlives its timeout while sending.
    outcome = await _stream(opened, [0.05] * 10)

    assert outcome == "cancelled"
    assert isinstance(opened.given_up, ClientTooSlow)
    assert "request timeout of 0.1s" in opened.given_up.message


async def test_a_stream_not_admitted_is_not_watched() -> None:
    opened = _Opened(read_timeout_s=None, timeout_s=None)

    assert await _stream(opened, [0.1]) == "finished"
    assert opened.given_up is None


async def test_a_stopped_stream_is_never_given_up() -> None:
    opened = _Opened(read_timeout_s=0.04, timeout_s=30)
    watch = ReadWatch(opened)  # type: ignore[arg-type]
    watch.sending()
    watch.stop()

    await asyncio.sleep(0.15)

    assert opened.given_up is None


@pytest.mark.parametrize("first_read_timeout", [4.0, 0.04])
async def test_a_stream_with_shorter_timeouts_is_looked_at_soon_enough(
    first_read_timeout: float,
) -> None:
    # Whichever stream starts first, the short one is caught near its own timeout.
    relaxed, strict = _Opened(first_read_timeout, 30), _Opened(0.04, 30)
    loop = asyncio.get_running_loop()
    began = loop.time()

    await asyncio.gather(_stream(relaxed, [0.01]), _stream(strict, [30]))

    assert isinstance(strict.given_up, ClientTooSlow)
    assert loop.time() - began < 0.3


def test_a_finished_event_loop_is_not_kept_alive_by_its_sweeper() -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_stream() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await _stream(_Opened(30, 30), [0.01])

    asyncio.run(one_stream())
    gc.collect()

    assert loops[0]() is None
