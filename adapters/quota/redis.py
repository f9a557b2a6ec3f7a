"""Quota counters in Redis, shared by every worker and replica: a Lua script per admit and
per settle (one round trip at most, atomic over all the counters of a request), keys that
expire with their window.

Windows come from the servers' clocks (the key names the minute, day or month), so replicas
should keep their clocks in step (NTP) as they do anyway for tokens' expiry times.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio
from redis.exceptions import NoScriptError, RedisError, ResponseError

from application.ports import QuotaStoreUnavailable
from domain.quota import Adjustment, Breach, Charge, Counter

# Settlements, then reservations, of several requests in one call; each reservation
# all-or-nothing, in arrival order. ARGV: now, the number of adjustments, per adjustment
# "delta window_end"; then per request: its log member, its number of charges, and per
# charge "kind amount limit window_end window_s" (window times in unix s). KEYS: the
# adjusted keys, then every charge's key, in the same order. Returns, per request, "0"
# (reserved) or "index:used:retry_after". A counter never goes below zero.
#
# Each redis.call costs the server more than the command itself, so the script makes as few
# as the answer allows: a window's expiry is set when the key is created (its name fixes the
# window), not at every charge; a charge of nothing is not written; a log is trimmed only
# when its untrimmed size (entries past the window still counted, so never less than its use)
# would refuse, or every TRIM_EVERY entries to bound what it keeps.
_SCRIPT = """
local now = tonumber(ARGV[1])
local adjusted = tonumber(ARGV[2])
for i = 1, adjusted do
  local k = KEYS[i]
  local delta, window_end = string.match(ARGV[2 + i], '^(%S+) (%S+)$')
  local change = tonumber(delta)
  local value = tonumber(redis.call('INCRBYFLOAT', k, delta))
  if value < 0 then
    redis.call('SET', k, '0', 'PXAT', math.ceil(tonumber(window_end) * 1000))
  elseif math.abs(value - change) <= 1e-9 * math.max(1, math.abs(change)) then
    -- The key may be new (or was at zero): make sure it expires.
    if redis.call('PTTL', k) < 0 then
      redis.call('PEXPIREAT', k, math.ceil(tonumber(window_end) * 1000))
    end
  end
end
local arg = 3 + adjusted
local key = adjusted + 1
local results = {}
local last = #ARGV
while arg <= last do
  local member = ARGV[arg]
  local n = tonumber(ARGV[arg + 1])
  arg = arg + 2
  local charges = {}
  local breach = nil
  for i = 1, n do
    local kind, amount, limit, window_end, window_s =
      string.match(ARGV[arg + i - 1], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    local k = KEYS[key + i - 1]
    local charge = {kind, amount, tonumber(window_end), tonumber(window_s), false}
    charges[i] = charge
    local need = tonumber(amount)
    limit = tonumber(limit)
    local used
    if kind == 'log' then
      used = redis.call('ZCARD', k)
      if used + need > limit or (used > 0 and used % TRIM_EVERY == 0) then
        used = used - redis.call('ZREMRANGEBYSCORE', k, '-inf', now - charge[4])
      end
    else
      local raw = redis.call('GET', k)
      charge[5] = raw
      used = tonumber(raw or '0')
    end
    if used + need > limit then
      local retry
      if kind == 'log' then
        local index = math.max(math.floor(used - limit), 0)
        local oldest = redis.call('ZRANGE', k, index, index, 'WITHSCORES')
        retry = tonumber(oldest[2]) + charge[4] - now
      elseif kind == 'gauge' then
        retry = 1
      else
        retry = charge[3] - now
      end
      breach = i .. ':' .. tostring(used) .. ':' .. tostring(retry)
      break
    end
  end
  if breach == nil then
    for i = 1, n do
      local k = KEYS[key + i - 1]
      local charge = charges[i]
      local kind = charge[1]
      if kind == 'log' then
        redis.call('ZADD', k, now, member)
        redis.call('PEXPIRE', k, math.ceil(charge[4] * 1000) + 1000)
      elseif kind == 'gauge' then
        -- A gauge's expiry moves with each request: slots a dead process held run out.
        redis.call('INCRBYFLOAT', k, charge[2])
        redis.call('PEXPIREAT', k, math.ceil(charge[3] * 1000))
      elseif tonumber(charge[2]) ~= 0 then
        redis.call('INCRBYFLOAT', k, charge[2])
        if not charge[5] then
          redis.call('PEXPIREAT', k, math.ceil(charge[3] * 1000))
        end
      end
    end
    breach = '0'
  end
  results[#results + 1] = breach
  arg = arg + n
  key = key + n
end
return results
""".replace("TRIM_EVERY", "32")


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
        self._timeout_s = timeout_s
        self._sha = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        # The batcher's own connection (it has one call in flight at a time), made on first use.
        self._connection: Any = None
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
        results = iter(await self._evalsha(keys, args))
        return [_text(next(results)) if isinstance(call, _Reserve) else None for call in calls]

    async def _evalsha(self, keys: list[str], args: list[str]) -> Any:
        """The script over the batcher's own connection, its command packed here in one go.

        redis-py's general path (a pooled connection fetched, health-checked and released, each
        argument encoded on its own, a task per write to time it out) cost the proxy more CPU
        per call than everything else about Redis limits; the batcher needs none of it."""
        command = _pack(["EVALSHA", self._sha, str(len(keys)), *keys, *args])
        try:
            return await self._round_trip(command)
        except NoScriptError:
            # A Redis restarted (or whose scripts were flushed) knows the script no more.
            await self._round_trip(_pack(["SCRIPT", "LOAD", _SCRIPT]))
            return await self._round_trip(command)

    async def _round_trip(self, command: bytes) -> Any:
        connection = self._connection
        if connection is None:
            pool = self._client.connection_pool
            # No timeout per read or write (each would cost a timer, and a task per write):
            # one deadline for the whole round trip below.
            kwargs = {**pool.connection_kwargs, "socket_timeout": None}
            connection = self._connection = pool.connection_class(**kwargs)
        try:
            async with asyncio.timeout(self._timeout_s):
                if connection.is_connected and await connection.can_read():
                    # Closed by the server (or out of step): as the pool would, start afresh.
                    await connection.disconnect()
                await connection.send_packed_command(command, check_health=False)
                return await connection.read_response()
        except ResponseError:
            raise  # Redis answered in full: the connection is fine.
        except BaseException:
            # A reply may still be on its way: never read it as the next call's.
            await connection.disconnect(nowait=True)
            raise

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
        if self._connection is not None:
            await self._connection.disconnect()
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class _Reserve:
    charges: tuple[Charge, ...]
    now: float


_Call = _Reserve | tuple[Adjustment, ...]


def _pack(parts: list[str]) -> bytes:
    """One Redis command in the wire protocol (RESP): an array of bulk strings."""
    encoded = [part.encode() for part in parts]
    return b"".join(
        [b"*%d\r\n" % len(encoded), *[b"$%d\r\n%s\r\n" % (len(item), item) for item in encoded]]
    )


def _text(item: Any) -> str:
    return item.decode() if isinstance(item, bytes) else str(item)


# Bounds one script call; the rest wait for the next.
MAX_BATCH = 64
# How long a call waits at most for more requests to join it while the event loop has other
# work to run. It goes as soon as the loop would go idle (nothing else ready two turns in a
# row), so a lightly loaded server sends at once; a saturated one, busy with requests that
# will reach admission soon, sends fewer and larger calls: at concurrency 16, 0.1 script calls
# per request instead of 0.7 with a wait of two turns, which cost the proxy and Redis a
# send, a receive and a wake-up each (1 ms: 0.5 calls; 2 ms: 0.2).
GATHER_MAX_S = 0.004
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
                await self._gather()
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

    async def _gather(self) -> None:
        """Waits while other work is ready to run in the event loop, GATHER_MAX_S at most."""
        loop = asyncio.get_running_loop()
        # What the loop runs next (asyncio's own loop keeps it in `_ready`). Without it (another
        # loop implementation) every turn looks idle: the call goes after two turns.
        ready = getattr(loop, "_ready", None)
        deadline = loop.time() + GATHER_MAX_S
        idle_turns = 0
        while len(self._waiting) < MAX_BATCH:
            await asyncio.sleep(0)
            # A turn with nothing ready after it may still bring I/O (new requests): one more.
            idle_turns = 0 if ready else idle_turns + 1
            if idle_turns == 2 or loop.time() >= deadline:
                return
