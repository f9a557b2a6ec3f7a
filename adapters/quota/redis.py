"""Quota counters in Redis, shared by every worker and replica: one Lua script per admit and
per settle (one round trip each, atomic over all the counters of a request), keys that expire
with their window.

Windows come from the servers' clocks (the key names the minute, day or month), so replicas
should keep their clocks in step (NTP) as they do anyway for tokens' expiry times.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

from application.ports import QuotaStoreUnavailable
from domain.quota import Adjustment, Breach, Charge, Counter

# Per charge: counter kind, amount, limit, window end (unix s), window length (s).
_RESERVE = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local n = #KEYS
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local kind = ARGV[base + 1]
  local amount = tonumber(ARGV[base + 2])
  local limit = tonumber(ARGV[base + 3])
  local window_end = tonumber(ARGV[base + 4])
  local window_s = tonumber(ARGV[base + 5])
  local used
  if kind == 'log' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window_s)
    used = redis.call('ZCARD', KEYS[i])
  else
    used = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  if used + amount > limit then
    local retry
    if kind == 'log' then
      local index = math.max(math.floor(used - limit), 0)
      local oldest = redis.call('ZRANGE', KEYS[i], index, index, 'WITHSCORES')
      retry = tonumber(oldest[2]) + window_s - now
    elseif kind == 'gauge' then
      retry = 1
    else
      retry = window_end - now
    end
    return {i, tostring(used), tostring(retry)}
  end
end
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local kind = ARGV[base + 1]
  local window_end = tonumber(ARGV[base + 4])
  if kind == 'log' then
    redis.call('ZADD', KEYS[i], now, member)
    redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[base + 5]) * 1000) + 1000)
  else
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[base + 2])
    redis.call('PEXPIREAT', KEYS[i], math.ceil(window_end * 1000))
  end
end
return {0}
"""

# Per adjustment: delta, window end. A counter never goes below zero.
_ADJUST = """
for i = 1, #KEYS do
  local delta = ARGV[(i - 1) * 2 + 1]
  local window_end = tonumber(ARGV[(i - 1) * 2 + 2])
  local value = tonumber(redis.call('INCRBYFLOAT', KEYS[i], delta))
  if value < 0 then
    redis.call('SET', KEYS[i], '0')
  end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then
    redis.call('PEXPIREAT', KEYS[i], math.ceil(window_end * 1000))
  end
end
return 0
"""


class RedisQuotaStore:
    def __init__(self, url: str, *, prefix: str = "llm-proxy:", timeout_s: float = 0.5) -> None:
        self._client: Any = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # The store decides what a failure means (fail open or closed), at once.
            retry_on_timeout=False,
        )
        self._prefix = prefix
        self._reserve = self._client.register_script(_RESERVE)
        self._adjust = self._client.register_script(_ADJUST)

    async def reserve(self, charges: Sequence[Charge], now: float) -> Breach | None:
        keys = [self._prefix + charge.key for charge in charges]
        args: list[str | float] = [repr(now), f"{now!r}:{secrets.token_hex(6)}"]
        for charge in charges:
            args += [
                charge.counter.value,
                repr(charge.amount),
                repr(charge.limit.amount),
                repr(charge.window_end),
                repr(charge.window_s),
            ]
        try:
            result = await self._reserve(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable(f"Redis: {exc}") from exc
        if int(result[0]) == 0:
            return None
        charge = charges[int(result[0]) - 1]
        return Breach(charge, float(result[1]), max(float(result[2]), 0.001))

    async def adjust(self, adjustments: Sequence[Adjustment], now: float) -> None:
        if not adjustments:
            return
        keys = [self._prefix + adjustment.key for adjustment in adjustments]
        args: list[str] = []
        for adjustment in adjustments:
            args += [repr(adjustment.delta), repr(adjustment.window_end)]
        try:
            await self._adjust(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable(f"Redis: {exc}") from exc

    async def usage(self, charges: Sequence[Charge], now: float) -> list[float]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for charge in charges:
                    key = self._prefix + charge.key
                    if charge.counter is Counter.LOG:
                        pipe.zcount(key, f"({now - charge.window_s!r}", "+inf")
                    else:
                        pipe.get(key)
                values = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable(f"Redis: {exc}") from exc
        return [float(value) if value is not None else 0.0 for value in values]

    async def check(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise QuotaStoreUnavailable(f"Redis: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
