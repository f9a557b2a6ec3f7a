"""The load generator: client processes that speak the wire contract with grpc.aio.

Several processes drive load at once so that one Python client's CPU is not the ceiling. They
are started once (spawned, because grpc does not survive fork) and reused by every scenario.
Each one warms up, reports ready and waits for "go", so that the parent can read the server's
counters between the warm-up and the measured phase of all clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue as MpQueue
from typing import Any, Literal

import grpc

from bench import procinfo
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

Mode = Literal["unary", "stream", "info"]
# A distinct subchannel pool per channel gives each channel its own TCP connection; by default
# grpc would share one connection between channels to the same address in a process.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


@dataclass(frozen=True, slots=True)
class LoadSpec:
    target: str
    mode: Mode
    concurrency: int
    duration_s: float
    warmup_s: float
    max_requests: int = 0  # for this process; 0 means bounded by duration only
    model: str | None = None
    prompt: str = "hello"
    token: str | None = None
    channels: int = 1
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class OpenStreamsSpec:
    target: str
    streams: int
    model: str
    prompt: str
    open_timeout_s: float
    total_timeout_s: float
    token: str | None = None
    channels: int = 1
    # Streams started at a time, the next batch once this one is open; 0 starts all at once.
    batch: int = 0


@dataclass(slots=True)
class WorkerResult:
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)
    chunks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_kb: int = 0


def combine(first: WorkerResult, second: WorkerResult) -> WorkerResult:
    """Two measured phases of one client process as if they were one."""
    errors = Counter(first.errors)
    errors.update(second.errors)
    return WorkerResult(
        ok=first.ok + second.ok,
        latencies=first.latencies + second.latencies,
        ttfc=first.ttfc + second.ttfc,
        chunks=first.chunks + second.chunks,
        errors=dict(errors),
        wall_s=first.wall_s + second.wall_s,
        cpu_s=first.cpu_s + second.cpu_s,
        rss_kb=max(first.rss_kb, second.rss_kb),
    )


@dataclass(slots=True)
class OpenStreamsResult:
    opened: int = 0
    completed: int = 0
    peak_open: int = 0
    open_s: float = 0.0
    wall_s: float = 0.0
    ttfc: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    rss_kb: int = 0


# --- inside a client process -------------------------------------------------------------------

Outcome = tuple[float | None, int, str | None]  # time of first chunk, chunks, error kind
Call = Callable[[int], Awaitable[Outcome]]


def _metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def _request(model: str | None, prompt: str) -> pb.ExecuteRequest:
    request = pb.ExecuteRequest(user_fragments=[prompt])
    if model is not None:
        request.model_name = model
    return request


def _error_kind(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return str(error.code().name)
    return type(error).__name__


def _caller(spec: LoadSpec, stubs: Sequence[pb_grpc.VibectlLLMProxyAsyncStub]) -> Call:
    metadata = _metadata(spec.token)
    timeout = spec.timeout_s
    request = _request(spec.model, spec.prompt)
    info_request = pb.GetServerInfoRequest()
    count = len(stubs)

    async def unary(task: int) -> Outcome:
        response = await stubs[task % count].Execute(request, metadata=metadata, timeout=timeout)
        if response.WhichOneof("result") != "success":
            return None, 0, f"inband:{response.error.error_code or 'missing'}"
        return None, 0, None

    async def stream(task: int) -> Outcome:
        call = stubs[task % count].StreamExecute(request, metadata=metadata, timeout=timeout)
        first: float | None = None
        chunks = 0
        complete = False
        error: str | None = None
        async for chunk in call:
            kind = chunk.WhichOneof("chunk_type")
            if kind == "text_chunk":
                if first is None:
                    first = time.perf_counter()
                chunks += 1
            elif kind == "complete":
                complete = True
            elif kind == "error":
                error = f"inband:{chunk.error.error_code or 'missing'}"
        if error is None and not complete:
            error = "stream_incomplete"
        return first, chunks, error

    async def info(task: int) -> Outcome:
        await stubs[task % count].GetServerInfo(info_request, metadata=metadata, timeout=timeout)
        return None, 0, None

    return {"unary": unary, "stream": stream, "info": info}[spec.mode]


async def _drive(
    call: Call, concurrency: int, deadline: float, cap: int, result: WorkerResult | None
) -> None:
    issued = 0
    errors: Counter[str] = Counter()

    async def task(index: int) -> None:
        nonlocal issued
        first_round = True
        clock = time.perf_counter
        while first_round or (clock() < deadline and (cap == 0 or issued < cap)):
            first_round = False
            issued += 1
            started = clock()
            try:
                first, chunks, error = await call(index)
            except Exception as exc:
                first, chunks, error = None, 0, _error_kind(exc)
            ended = clock()
            if result is None:
                continue
            if error is not None:
                errors[error] += 1
                continue
            result.ok += 1
            result.latencies.append(ended - started)
            result.chunks += chunks
            if first is not None:
                result.ttfc.append(first - started)

    await asyncio.gather(*(task(index) for index in range(concurrency)))
    if result is not None:
        result.errors = dict(errors)


def _open_channels(target: str, count: int) -> list[grpc.aio.Channel]:
    return [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(count)]


async def _run_load(spec: LoadSpec, inbox: MpQueue[Any], outbox: MpQueue[Any], me: int) -> None:
    channels = _open_channels(spec.target, max(spec.channels, 1))
    try:
        stubs = [pb_grpc.VibectlLLMProxyStub(channel) for channel in channels]
        call = _caller(spec, stubs)
        await _drive(call, spec.concurrency, time.perf_counter() + spec.warmup_s, 0, None)
        outbox.put(("ready", me))
        await asyncio.to_thread(inbox.get)
        result = WorkerResult()
        cpu_before = time.process_time()
        started = time.perf_counter()
        await _drive(call, spec.concurrency, started + spec.duration_s, spec.max_requests, result)
        result.wall_s = time.perf_counter() - started
        result.cpu_s = time.process_time() - cpu_before
        result.rss_kb = procinfo.rss_kb(os.getpid())
        outbox.put(("done", me, result))
    finally:
        for channel in channels:
            await channel.close(None)


async def _run_open_streams(spec: OpenStreamsSpec, outbox: MpQueue[Any], me: int) -> None:
    channels = _open_channels(spec.target, max(spec.channels, 1))
    stubs = [pb_grpc.VibectlLLMProxyStub(channel) for channel in channels]
    request = _request(spec.model, spec.prompt)
    metadata = _metadata(spec.token)
    result = OpenStreamsResult()
    errors: Counter[str] = Counter()
    all_open = asyncio.Event()
    progress = asyncio.Event()
    current = 0
    settled = 0  # streams that are open or already over
    started = time.perf_counter()

    def settle() -> None:
        nonlocal settled
        settled += 1
        progress.set()

    async def one(index: int) -> None:
        nonlocal current
        is_open = False
        complete = False
        error: str | None = None
        call = stubs[index % len(stubs)].StreamExecute(
            request, metadata=metadata, timeout=spec.total_timeout_s
        )
        try:
            async for chunk in call:
                kind = chunk.WhichOneof("chunk_type")
                if kind == "text_chunk" and not is_open:
                    is_open = True
                    result.ttfc.append(time.perf_counter() - started)
                    result.opened += 1
                    current += 1
                    result.peak_open = max(result.peak_open, current)
                    settle()
                    if result.opened == spec.streams:
                        all_open.set()
                elif kind == "complete":
                    complete = True
                elif kind == "error":
                    error = f"inband:{chunk.error.error_code or 'missing'}"
        except asyncio.CancelledError:
            error = "client_timeout"
            call.cancel()
        except Exception as exc:
            error = _error_kind(exc)
        finally:
            if is_open:
                current -= 1
            else:
                settle()
        if error is None and not complete:
            error = "stream_incomplete"
        if error is None:
            result.completed += 1
        else:
            errors[error] += 1

    tasks: list[asyncio.Task[None]] = []
    batch = spec.batch or spec.streams
    open_deadline = started + spec.open_timeout_s
    with contextlib.suppress(TimeoutError):
        while len(tasks) < spec.streams:
            tasks.extend(
                asyncio.create_task(one(index))
                for index in range(len(tasks), min(len(tasks) + batch, spec.streams))
            )
            while settled < len(tasks):
                progress.clear()
                await asyncio.wait_for(progress.wait(), open_deadline - time.perf_counter())
        await asyncio.wait_for(all_open.wait(), open_deadline - time.perf_counter())
    result.open_s = time.perf_counter() - started
    outbox.put(("open", me, result.opened, result.open_s))
    remaining = max(spec.total_timeout_s - result.open_s, 1.0)
    _, pending = await asyncio.wait(tasks, timeout=remaining)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    if len(tasks) < spec.streams:
        errors["not_started"] += spec.streams - len(tasks)
    result.wall_s = time.perf_counter() - started
    result.errors = dict(errors)
    result.rss_kb = procinfo.rss_kb(os.getpid())
    for channel in channels:
        await channel.close(None)
    outbox.put(("done", me, result))


def _worker_main(inbox: MpQueue[Any], outbox: MpQueue[Any], me: int) -> None:
    while True:
        message = inbox.get()
        kind = message[0]
        try:
            if kind == "stop":
                return
            if kind == "load":
                asyncio.run(_run_load(message[1], inbox, outbox, me))
            elif kind == "open-streams":
                asyncio.run(_run_open_streams(message[1], outbox, me))
        except Exception as exc:
            outbox.put(("failed", me, f"{type(exc).__name__}: {exc}"))


# --- in the parent ----------------------------------------------------------------------------


class ClientPool:
    """Long-lived client processes; scenarios borrow the first n of them."""

    def __init__(self, size: int) -> None:
        context = mp.get_context("spawn")
        self._outbox: MpQueue[Any] = context.Queue()
        self._inboxes: list[MpQueue[Any]] = []
        self._processes: list[BaseProcess] = []
        for me in range(size):
            inbox: MpQueue[Any] = context.Queue()
            process = context.Process(
                target=_worker_main, args=(inbox, self._outbox, me), daemon=True
            )
            process.start()
            self._inboxes.append(inbox)
            self._processes.append(process)

    @property
    def size(self) -> int:
        return len(self._processes)

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.pid is not None]

    def _expect(self, kind: str, count: int, timeout_s: float) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + timeout_s
        got: list[tuple[Any, ...]] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"client processes did not report {kind!r} in time")
            try:
                message = self._outbox.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if not all(process.is_alive() for process in self._processes):
                    raise RuntimeError("a client process died") from None
                continue
            if message[0] == "failed":
                raise RuntimeError(f"client process {message[1]} failed: {message[2]}")
            if message[0] != kind:
                raise RuntimeError(f"expected {kind!r} from a client process, got {message[0]!r}")
            got.append(message)
        return got

    def run_load(
        self, specs: Sequence[LoadSpec], between: Callable[[], None]
    ) -> list[WorkerResult]:
        """Warm up all clients, call `between`, run the measured phase, return each result."""
        if len(specs) > self.size:
            raise ValueError(f"{len(specs)} clients asked for, the pool has {self.size}")
        for inbox, spec in zip(self._inboxes, specs, strict=False):
            inbox.put(("load", spec))
        slowest = max(spec.warmup_s for spec in specs)
        self._expect("ready", len(specs), slowest + 60.0)
        between()
        for inbox in self._inboxes[: len(specs)]:
            inbox.put(("go",))
        longest = max(spec.duration_s + spec.timeout_s for spec in specs)
        done = self._expect("done", len(specs), longest + 60.0)
        return [message[2] for message in sorted(done, key=lambda message: message[1])]

    def run_open_streams(
        self, spec: OpenStreamsSpec, when_open: Callable[[int, float], None]
    ) -> OpenStreamsResult:
        self._inboxes[0].put(("open-streams", spec))
        _, _, opened, open_s = self._expect("open", 1, spec.open_timeout_s + 60.0)[0]
        when_open(opened, open_s)
        done = self._expect("done", 1, spec.total_timeout_s + 60.0)
        result: OpenStreamsResult = done[0][2]
        return result

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(("stop",))
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
