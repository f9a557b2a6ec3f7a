"""How the Redis store's batcher groups calls: by what the event loop still has to run."""

from __future__ import annotations

import asyncio

import pytest

from adapters.quota import redis as redis_store
from adapters.quota.redis import _Batcher


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def send(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        return [item * 2 for item in items]


async def test_requests_reaching_admission_while_the_loop_is_busy_share_one_call() -> None:
    recorder = _Recorder()
    batcher: _Batcher[int, int] = _Batcher(recorder.send, 0.01)

    async def one(index: int) -> int:
        # Requests arrive over many turns of the loop, as they do behind a busy server.
        for _ in range(index * 3):
            await asyncio.sleep(0)
        return await batcher.submit(index)

    assert await asyncio.gather(*(one(index) for index in range(12))) == [
        index * 2 for index in range(12)
    ]
    assert recorder.calls == [list(range(12))]


async def test_a_lone_request_goes_once_the_loop_has_nothing_else_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Were the call to wait out the gathering time, this test would never end.
    monkeypatch.setattr(redis_store, "GATHER_MAX_S", 3600.0)
    recorder = _Recorder()
    batcher: _Batcher[int, int] = _Batcher(recorder.send, 0.01)
    assert await asyncio.wait_for(batcher.submit(21), timeout=30) == 42
    assert await asyncio.wait_for(batcher.submit(1), timeout=30) == 2
    assert recorder.calls == [[21], [1]]


async def test_settlements_ride_with_the_next_reservation() -> None:
    recorder = _Recorder()
    batcher: _Batcher[int, int] = _Batcher(recorder.send, 3600.0)
    settled = asyncio.ensure_future(batcher.submit(5, urgent=False))
    await asyncio.sleep(0)
    assert await batcher.submit(7) == 14
    assert await settled == 10
    assert recorder.calls == [[5, 7]]
