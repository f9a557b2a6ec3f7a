"""The Redis quota store against the in-memory one, call for call, on a real redis-server.

The in-memory store is the reference: whatever the Redis script does to save work (counters
it does not touch, logs it trims only when it must), each reservation must be admitted or
refused alike, with the same use and retry time, and every counter must read the same.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import redis.asyncio

from adapters.quota.memory import MemoryQuotaStore
from adapters.quota.redis import RedisQuotaStore
from application.ports import QuotaStoreUnavailable
from domain.quota import Adjustment, AppliedLimit, Breach, Charge, Counter, LimitKind, Scope
from tests.support.services import PrivateRedis


def _charge(
    key: str,
    counter: Counter,
    kind: LimitKind,
    limit: float,
    amount: float,
    window_end: float,
    window_s: float,
) -> Charge:
    applied = AppliedLimit(Scope.SUBJECT, "alice", None, kind, limit, "default")
    return Charge(applied, key, counter, amount, window_end, window_s)


def _same(redis_breach: Breach | None, memory_breach: Breach | None) -> None:
    if memory_breach is None:
        assert redis_breach is None
        return
    assert redis_breach is not None
    assert redis_breach.charge is memory_breach.charge
    assert redis_breach.used == pytest.approx(memory_breach.used)
    assert redis_breach.retry_after_s == pytest.approx(memory_breach.retry_after_s, abs=1e-6)


async def test_every_call_answers_as_the_in_memory_store_does(redis_url: str) -> None:
    rng = random.Random(13)
    start = time.time()
    window_end = start + 3600.0
    store = RedisQuotaStore(redis_url, prefix="t:")
    memory = MemoryQuotaStore()
    now = start

    # A log (5 in any 4 seconds), a window of tokens, one of dollars, a gauge.
    def charges(now: float) -> list[Charge]:
        found = [
            _charge("log", Counter.LOG, LimitKind.REQUESTS_PER_MINUTE, 5, 1.0, now + 4, 4.0),
            _charge(
                "tokens",
                Counter.WINDOW,
                LimitKind.TOKENS_PER_MINUTE,
                300,
                float(rng.choice([0, 7, 40, 120])),
                window_end,
                3600.0,
            ),
            _charge(
                "usd",
                Counter.WINDOW,
                LimitKind.USD_PER_DAY,
                2.5,
                rng.choice([0.0, 0.25, 0.5, 1.25]),
                window_end,
                3600.0,
            ),
            _charge("gauge", Counter.GAUGE, LimitKind.CONCURRENT, 3, 1.0, now + 3000, 0.0),
        ]
        return rng.sample(found, rng.randint(1, 4))

    refused = admitted = 0
    try:
        for _ in range(400):
            now += rng.choice([0.0, 0.01, 0.3, 0.9, 2.5])
            if rng.random() < 0.6:
                wanted = charges(now)
                got, expected = await store.reserve(wanted, now), memory.reserve_now(wanted, now)
                _same(got, expected)
                refused += expected is not None
                admitted += expected is None
            else:
                adjustments = [
                    Adjustment(key, counter, delta, end)
                    for key, counter, delta, end in rng.sample(
                        [
                            (
                                "tokens",
                                Counter.WINDOW,
                                float(rng.choice([-150, -7, 3])),
                                window_end,
                            ),
                            ("usd", Counter.WINDOW, rng.choice([-2.0, -0.25, 0.75]), window_end),
                            ("gauge", Counter.GAUGE, -1.0, now + 3000),
                        ],
                        rng.randint(1, 3),
                    )
                ]
                await store.adjust(adjustments, now)
                memory.adjust_now(adjustments, now)
            probe = charges(now)
            assert await store.usage(probe, now) == pytest.approx(await memory.usage(probe, now))
    finally:
        await store.close()
    # Both answers were exercised, many times.
    assert refused > 50 and admitted > 50


async def test_concurrent_reservations_admit_exactly_the_limit(redis_url: str) -> None:
    stores = [RedisQuotaStore(redis_url, prefix="t:") for _ in range(2)]
    now = time.time()
    limit = _charge("log", Counter.LOG, LimitKind.REQUESTS_PER_MINUTE, 60, 1.0, now + 60, 60.0)
    try:
        answers = await asyncio.gather(
            *(stores[index % 2].reserve([limit], now) for index in range(200))
        )
        assert sum(answer is None for answer in answers) == 60
        assert await stores[0].usage([limit], now) == [60.0]
    finally:
        for store in stores:
            await store.close()


async def test_a_window_counter_expires_with_its_window(redis_url: str) -> None:
    store = RedisQuotaStore(redis_url, prefix="t:")
    client = redis.asyncio.Redis.from_url(redis_url)
    now = time.time()
    end = now + 30
    tokens = _charge("tokens", Counter.WINDOW, LimitKind.TOKENS_PER_MINUTE, 100, 5.0, end, 60.0)
    gauge = _charge("gauge", Counter.GAUGE, LimitKind.CONCURRENT, 3, 1.0, now + 300, 0.0)
    log = _charge("log", Counter.LOG, LimitKind.REQUESTS_PER_MINUTE, 9, 1.0, now + 60, 60.0)
    try:
        for _ in range(3):
            assert await store.reserve([tokens, gauge, log], now) is None
        # Settled below zero: kept at zero, and still expiring.
        await store.adjust([Adjustment("tokens", Counter.WINDOW, -99.0, end)], now)
        await store.adjust([Adjustment("fresh", Counter.WINDOW, 4.0, end)], now)
        await store.adjust([Adjustment("gone", Counter.GAUGE, -1.0, now + 300)], now)
        assert await client.get("t:tokens") == b"0"
        for key, most in (("tokens", 30), ("fresh", 30), ("gone", 300), ("gauge", 300)):
            ttl = await client.pttl(f"t:{key}")
            assert most * 1000 - 2000 < ttl <= most * 1000, key
        assert 0 < await client.pttl("t:log") <= 61_000
    finally:
        await store.close()
        await client.aclose()


async def test_a_redis_that_forgot_the_script_or_went_away_is_handled(
    private_redis: PrivateRedis,
) -> None:
    store = RedisQuotaStore(private_redis.url, prefix="t:", timeout_s=0.5)
    now = time.time()
    log = _charge("log", Counter.LOG, LimitKind.REQUESTS_PER_MINUTE, 9, 1.0, now + 60, 60.0)
    client = redis.asyncio.Redis.from_url(private_redis.url)
    try:
        assert await store.reserve([log], now) is None
        await client.script_flush()
        assert await store.reserve([log], now) is None
        private_redis.stop()
        with pytest.raises(QuotaStoreUnavailable):
            await store.reserve([log], now)
        private_redis.start()
        # A fresh server: no script, no counters.
        assert await store.reserve([log], now) is None
        assert await store.usage([log], now) == [1.0]
    finally:
        await store.close()
        await client.aclose()


async def test_a_log_keeps_few_entries_past_its_window(redis_url: str) -> None:
    store = RedisQuotaStore(redis_url, prefix="t:")
    client = redis.asyncio.Redis.from_url(redis_url)
    start = time.time()
    try:
        for index in range(500):
            now = start + index * 0.1
            log = _charge(
                "log", Counter.LOG, LimitKind.REQUESTS_PER_MINUTE, 1000, 1.0, now + 2, 2.05
            )
            assert await store.reserve([log], now) is None
        # 21 entries are within the last 2.05 s; the log is trimmed at least every 32 entries.
        assert 21 <= await client.zcard("t:log") <= 21 + 32
        assert await store.usage([log], now) == [21.0]
    finally:
        await store.close()
        await client.aclose()
