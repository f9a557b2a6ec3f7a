"""Quota counters in Redis, shared by every worker and replica: a Lua script per admit and
per settle (one round trip at most, atomic over all the counters of a request), keys that
expire with their window.

Windows come from the servers' clocks (the key names the minute, day or month), so replicas
should keep their clocks in step (NTP) as they do anyway for tokens' expiry times.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio
from redis.exceptions import RedisError

from application.ports import QuotaStoreUnavailable
from domain.quota import Adjustment, Breach, Charge, Counter

# Settlements, then reservations, of several requests in one call; each reservation
# all-or-nothing, in arrival order. ARGV: now, the number of adjustments, per adjustment
# "delta window_end"; then per request: its log member, its number of charges, and per
# charge "kind amount limit window_end window_s" (window times in unix s). One argument per
# adjustment and per charge: the client encodes every argument on its own. KEYS: the
# adjusted keys, then every charge's key, in the same order. Returns, per request, "0"
# (reserved) or "index:used:retry_after". A counter never goes below zero.
_SCRIPT = """
local now = tonumber(ARGV[1])
local adjusted = tonumber(ARGV[2])
for i = 1, adjusted do
  local k = KEYS[i]
  local delta, window_end = string.match(ARGV[2 + i], '^(%S+) (%S+)$')
  local value = tonumber(redis.call('INCRBYFLOAT', k, delta))
  if value < 0 then
    redis.call('SET', k, '0')
  end
  if redis.call('PTTL', k) < 0 then
    redis.call('PEXPIREAT', k, math.ceil(tonumber(window_end) * 1000))
  end
end
local arg = 3 + adjusted
local key = adjusted + 1
local results = {}
while arg <= #ARGV do
  local member = ARGV[arg]
  local n = tonumber(ARGV[arg + 1])
  arg = arg + 2
  local charges = {}
  for i = 1, n do
    local kind, amount, limit, window_end, window_s =
      string.match(ARGV[arg + i - 1], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    charges[i] = {kind, amount, tonumber(limit), tonumber(window_end), tonumber(window_s)}
  end
  local breach = nil
  for i = 1, n do
    local kind = charges[i][1]
    local amount = tonumber(charges[i][2])
    local limit = charges[i][3]
    local window_end = charges[i][4]
    local window_s = charges[i][5]
    local k = KEYS[key + i - 1]
    local used
    if kind == 'log' then
      redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window_s)
      used = redis.call('ZCARD', k)
    else
      used = tonumber(redis.call('GET', k) or '0')
    end
    if used + amount > limit then
      local retry
      if kind == 'log' then
        local index = math.max(math.floor(used - limit), 0)
        local oldest = redis.call('ZRANGE', k, index, index, 'WITHSCORES')
        retry = tonumber(oldest[2]) + window_s - now
      elseif kind == 'gauge' then
        retry = 1
      else
        retry = window_end - now
      end
      breach = i .. ':' .. tostring(used) .. ':' .. tostring(retry)
      break
    end
  end
  if breach == nil then
    for i = 1, n do
      local k = KEYS[key + i - 1]
      if charges[i][1] == 'log' then
        redis.call('ZADD', k, now, member)
        redis.call('PEXPIRE', k, math.ceil(charges[i][5] * 1000) + 1000)
      else
        redis.call('INCRBYFLOAT', k, charges[i][2])
        redis.call('PEXPIREAT', k, math.ceil(charges[i][4] * 1000))
      end
    end
    breach = '0'
  end
  results[#results + 1] = breach
  arg = arg + n
  key = key + n
end
return results
"""


class RedisQuotaStore:
    """Calls that arrive while one is on its way to Redis wait and go together in the next:
    under load one script call carries many requests' reservations (or settlements), each
    still atomic on its own, so a request costs less than a round trip of its own."""

    local = False

    def __init__(self, url: str, *, prefix: str = "llm-proxy:", timeout_s: float = 0.5) -> None:
        self._client: Any = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # The store decides what a failure means (fail open or closed), at once.
            retry_on_timeout=False,
        )
        self._prefix = prefix
        self._script = self._client.register_script(_SCRIPT)
        self._batcher: _Batcher[_Call, str | None] = _Batcher(self._send, SETTLE_LINGER_S)
        # Log members must be unique among every process sharing the store: a random prefix
        # per store and a sequence number, instead of random bytes from the OS per request.
        self._member_prefix = secrets.token_hex(8)
        self._sequence = itertools.count()

    async def reserve(self, charges: Sequence[Charge], now: float) -> Breach | None:
        result = await self._batcher.submit(_Reserve(tuple(charges), now))
        if result == "0" or result is None:
            return None
        index, used, retry_after = result.split(":")
        return Breach(charges[int(index) - 1], float(used), max(float(retry_after), 0.001))

    async def adjust(self, adjustments: Sequence[Adjustment], now: float) -> None:
        if adjustments:
            await self._batcher.submit(tuple(adjustments), urgent=False)

    async def _send(self, calls: list[_Call]) -> list[str | None]:
        reservations = [call for call in calls if isinstance(call, _Reserve)]
        adjustments = [a for call in calls if not isinstance(call, _Reserve) for a in call]
        # One clock for the batch: the latest, so no window is charged for a time passed.
        now = max((call.now for call in reservations), default=time.time())
        prefix = self._prefix
        keys = [prefix + adjustment.key for adjustment in adjustments]
        args: list[str] = [repr(now), str(len(adjustments))]
        args += [f"{each.delta!r} {each.window_end!r}" for each in adjustments]
        member_prefix = self._member_prefix
        for reservation in reservations:
            args += [f"{member_prefix}:{next(self._sequence)}", str(len(reservation.charges))]
            for charge in reservation.charges:
                keys.append(prefix + charge.key)
                args.append(
                    f"{charge.counter.value} {charge.amount!r} {charge.limit.amount!r} "
                    f"{charge.window_end!r} {charge.window_s!r}"
                )
        results = iter(await self._script(keys=keys, args=args))
        return [_text(next(results)) if isinstance(call, _Reserve) else None for call in calls]

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


@dataclass(frozen=True, slots=True)
class _Reserve:
    charges: tuple[Charge, ...]
    now: float


_Call = _Reserve | tuple[Adjustment, ...]


def _text(item: Any) -> str:
    return item.decode() if isinstance(item, bytes) else str(item)


# Bounds one script call; the rest wait for the next.
MAX_BATCH = 64
# Event-loop turns a call waits at most for more requests to join it before it goes: each
# adds one pass over the loop's ready work to the request's latency, and no timer. At
# concurrency 16 this took a script call per request down to 0.6 (server CPU per request
# -13% against sending at once).
GATHER_ROUNDS = 8
# How long settlements wait for a reservation to travel with before they go on their own:
# long enough for the next request to come along under load, short enough that a
# concurrency slot released here is soon seen free by the other replicas.
SETTLE_LINGER_S = 0.01

T = TypeVar("T")
R = TypeVar("R")


class _Batcher(Generic[T, R]):
    """Sends what was submitted meanwhile as one call; one call in flight at a time.

    Items submitted as not urgent (settlements: nobody waits for them) start no call of their
    own at once: they ride along with the next reservation, or go after `linger_s` if none
    comes, so that a request costs one round trip rather than two."""

    def __init__(self, send: Callable[[list[T]], Awaitable[list[R]]], linger_s: float) -> None:
        self._send = send
        self._linger_s = linger_s
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._sending = False
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: T, *, urgent: bool = True) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if urgent:
            self._start(loop)
        elif not self._sending and self._timer is None:
            self._timer = loop.call_later(self._linger_s, self._start, loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._sending:
            self._sending = True
            loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._waiting:
                # Let the work already waiting in the event loop run first: under load the
                # requests behind this one reach admission too and join this call. Stops as
                # soon as two turns in a row bring nobody, so an idle server waits two turns.
                idle_turns = 0
                for _ in range(GATHER_ROUNDS):
                    waiting = len(self._waiting)
                    await asyncio.sleep(0)
                    idle_turns = idle_turns + 1 if len(self._waiting) == waiting else 0
                    if idle_turns == 2:
                        break
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    results = await self._send([item for item, _ in batch])
                except (RedisError, OSError) as exc:
                    failure = QuotaStoreUnavailable(f"Redis: {exc}")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._sending = False
