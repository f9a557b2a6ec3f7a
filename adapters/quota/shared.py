"""Quota counters held by the `serve --workers N` supervisor and shared by its workers.

Without Redis, N workers with N private stores would give each caller N times its limits.
The supervisor keeps the one MemoryQuotaStore and serves it on a Unix socket (in a directory
only this user can enter); each worker sends its reserve/adjust/usage calls there, one line
of JSON each way per call, several calls in flight on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Sequence
from typing import Any

from adapters.quota.memory import MemoryQuotaStore
from application.ports import QuotaStoreUnavailable
from domain.quota import (
    Adjustment,
    AppliedLimit,
    Breach,
    Charge,
    Counter,
    LimitKind,
    Scope,
)

log = logging.getLogger("llm_proxy.admission")

# Lines are small (a handful of counters), but a limit keeps a hostile peer from growing one.
MAX_LINE = 1 << 20


def _charge_out(charge: Charge) -> list[Any]:
    return [
        charge.key,
        charge.counter.value,
        charge.amount,
        charge.limit.amount,
        charge.window_end,
        charge.window_s,
    ]


def _charge_in(raw: list[Any]) -> Charge:
    key, counter, amount, limit, window_end, window_s = raw
    # The store reads only the limit's amount; the rest of the limit stays with the worker.
    applied = AppliedLimit(Scope.SUBJECT, "", None, LimitKind.CONCURRENT, float(limit), "")
    return Charge(applied, str(key), Counter(counter), float(amount), window_end, window_s)


class QuotaServer:
    """The supervisor's side: answers workers from one MemoryQuotaStore."""

    def __init__(self, store: MemoryQuotaStore | None = None) -> None:
        self.store = store if store is not None else MemoryQuotaStore()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path, limit=MAX_LINE)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(self._answer(json.loads(line)) + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            log.warning("quota client went away: %s", exc)
        finally:
            writer.close()

    def _answer(self, call: dict[str, Any]) -> bytes:
        store, now = self.store, float(call["now"])
        op = call["op"]
        result: Any = None
        if op == "reserve":
            breach = store.reserve_now([_charge_in(raw) for raw in call["charges"]], now)
            if breach is not None:
                index = [raw[0] for raw in call["charges"]].index(breach.charge.key)
                result = [index, breach.used, breach.retry_after_s]
        elif op == "adjust":
            store.adjust_now(
                [
                    Adjustment(key, Counter(counter), float(delta), float(end))
                    for key, counter, delta, end in call["adjustments"]
                ],
                now,
            )
        elif op == "usage":
            result = [store.used_now(_charge_in(raw), now) for raw in call["charges"]]
        return json.dumps({"id": call["id"], "result": result}).encode()


class SharedQuotaStore:
    """A worker's side: implements application.ports.QuotaStore over the supervisor's socket."""

    local = False

    def __init__(self, path: str) -> None:
        self._path = path
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                try:
                    reader, writer = await asyncio.open_unix_connection(self._path, limit=MAX_LINE)
                except OSError as exc:
                    raise QuotaStoreUnavailable(f"the supervisor's quota store: {exc}") from exc
                self._writer = writer
                self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                reply = json.loads(line)
                future = self._waiting.pop(reply["id"], None)
                if future is not None and not future.done():
                    future.set_result(reply["result"])
        except (ConnectionError, ValueError) as exc:
            log.warning("lost the supervisor's quota store: %s", exc)
        finally:
            self._writer = None
            failure = QuotaStoreUnavailable("the supervisor's quota store closed the connection")
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(failure)
            self._waiting.clear()

    async def _call(self, op: str, now: float, **fields: Any) -> Any:
        writer = await self._connection()
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        try:
            writer.write(json.dumps({"id": call_id, "op": op, "now": now, **fields}).encode())
            writer.write(b"\n")
            await writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(call_id, None)
            raise QuotaStoreUnavailable(f"the supervisor's quota store: {exc}") from exc
        return await future

    async def reserve(self, charges: Sequence[Charge], now: float) -> Breach | None:
        result = await self._call("reserve", now, charges=[_charge_out(c) for c in charges])
        if result is None:
            return None
        index, used, retry_after_s = result
        return Breach(charges[index], float(used), float(retry_after_s))

    async def adjust(self, adjustments: Sequence[Adjustment], now: float) -> None:
        await self._call(
            "adjust",
            now,
            adjustments=[[a.key, a.counter.value, a.delta, a.window_end] for a in adjustments],
        )

    async def usage(self, charges: Sequence[Charge], now: float) -> list[float]:
        result = await self._call("usage", now, charges=[_charge_out(c) for c in charges])
        return [float(value) for value in result]

    async def check(self) -> None:
        await self._call("ping", 0.0)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
