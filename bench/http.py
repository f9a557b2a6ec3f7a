"""`python -m bench.http`: the HTTP transport against gRPC and against a no-op ASGI floor.

One run starts the proxy (serving gRPC and HTTP from one process) and the floor, then drives,
in alternating rounds so every scenario sees the same background load: unary and streamed
calls over gRPC and over HTTP to the proxy, and the same HTTP calls to the floor. It reports
throughput, median latency, median time to first chunk and the server's CPU per request, read
from /proc, and writes the table to bench/results/http.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import yaml

from bench import procinfo
from bench.servers import HOST, ServerProcess, free_port
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "hello proxy"
# A chunk that carries answer text (the first event's empty content does not count).
_TEXT = re.compile(rb'"content":"[^"]')


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_chunks: list[float] = field(default_factory=list)

    def row(self, name: str, server: str) -> dict[str, object]:
        ok = max(self.requests, 1)
        return {
            "scenario": name,
            "server": server,
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": self.requests / self.seconds if self.seconds else 0.0,
            "p50_ms": statistics.median(self.latencies) * 1000 if self.latencies else None,
            "ttfc_p50_ms": statistics.median(self.first_chunks) * 1000
            if self.first_chunks
            else None,
            "cpu_us_per_req": self.cpu_s / ok * 1e6,
        }


Call = Callable[[], Awaitable[float | None]]


def grpc_calls(target: str) -> tuple[grpc.aio.Channel, Call, Call]:
    channel = grpc.aio.insecure_channel(target)
    stub = pb_grpc.VibectlLLMProxyStub(channel)
    request = pb.ExecuteRequest(user_fragments=[PROMPT], model_name="echo")

    async def unary() -> float | None:
        reply = await stub.Execute(request)
        if reply.WhichOneof("result") != "success":
            raise RuntimeError(reply.error.error_message)
        return None

    async def stream() -> float | None:
        began = time.perf_counter()
        first: float | None = None
        async for chunk in stub.StreamExecute(request):
            if first is None and chunk.WhichOneof("chunk_type") == "text_chunk":
                first = time.perf_counter() - began
        return first

    return channel, unary, stream


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client, one connection per concurrent caller: httpx spends
    more CPU per request than the servers under test, and would measure itself."""

    def __init__(self, host: str, port: int, concurrency: int) -> None:
        self._host = host
        self._port = port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._size = concurrency
        self._open: list[asyncio.StreamWriter] = []

    async def _connection(
        self, *, fresh: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if fresh or (self._idle.empty() and len(self._open) < self._size):
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._open.append(writer)
            return reader, writer
        return await self._idle.get()

    async def post(self, body: bytes, *, stream: bool) -> float | None:
        for attempt in (1, 2):
            reader, writer = await self._connection(fresh=attempt == 2)
            try:
                first = await self._exchange(reader, writer, body, stream)
            except (asyncio.IncompleteReadError, ConnectionError):
                # The server closes keep-alive connections idle for 5 s (between rounds):
                # that one is dropped and the call made again on a new connection.
                writer.close()
                self._open.remove(writer)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                writer.close()
                self._open.remove(writer)
                raise
            self._idle.put_nowait((reader, writer))
            return first
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes, stream: bool
    ) -> float | None:
        began = time.perf_counter()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\n"
            b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        first: float | None = None
        if stream:
            # Chunked server-sent events, to the terminating empty chunk.
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.strip(), 16)
                data = await reader.readexactly(size + 2)
                if first is None and _TEXT.search(data):
                    first = time.perf_counter() - began
                if size == 0:
                    break
        else:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        return first

    async def close(self) -> None:
        for writer in self._open:
            writer.close()


def http_calls(port: int, concurrency: int) -> tuple[RawHttp, Call, Call]:
    client = RawHttp(HOST, port, concurrency)
    body = {"model": "echo", "messages": [{"role": "user", "content": PROMPT}]}
    unary_body = json.dumps(body).encode()
    stream_body = json.dumps({**body, "stream": True}).encode()

    async def unary() -> float | None:
        return await client.post(unary_body, stream=False)

    async def stream() -> float | None:
        return await client.post(stream_body, stream=True)

    return client, unary, stream


async def drive(call: Call, concurrency: int, seconds: float, pid: int, tally: Tally) -> None:
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                first = await call()
            except Exception:
                tally.errors += 1
                continue
            tally.latencies.append(time.perf_counter() - began)
            if first is not None:
                tally.first_chunks.append(first)
            tally.requests += 1

    cpu_before = procinfo.tree_cpu_seconds(pid)
    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.seconds += time.perf_counter() - began
    tally.cpu_s += procinfo.tree_cpu_seconds(pid) - cpu_before


def start_servers(work: Path) -> tuple[ServerProcess, ServerProcess, int]:
    config = work / "proxy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"serve": ["echo"], "default": "echo"},
                "auth": {"enabled": False},
                "http": {"enabled": True},
            }
        )
    )
    grpc_port, http_port, floor_port = free_port(), free_port(), free_port()
    proxy = ServerProcess(
        name="proxy",
        argv=[
            sys.executable,
            "-m",
            "infrastructure.cli",
            "serve",
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(grpc_port),
            "--http-port",
            str(http_port),
        ],
        port=grpc_port,
        log_path=work / "proxy.log",
    )
    floor = ServerProcess(
        name="http-floor",
        argv=[sys.executable, "-m", "bench.http_floor", "--host", HOST, "--port", str(floor_port)],
        port=floor_port,
        log_path=work / "floor.log",
    )
    proxy.start()
    with open(floor.log_path, "wb") as log:
        floor.process = subprocess.Popen(floor.argv, stdout=log, stderr=subprocess.STDOUT)
    return proxy, floor, http_port


async def wait_http(base: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await client.post(f"{base}/v1/chat/completions", json={"stream": False})
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def run(concurrency: int, seconds: float, rounds: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="bench-http-") as scratch:
        proxy, floor, http_port = start_servers(Path(scratch))
        try:
            proxy_base = f"http://{HOST}:{http_port}"
            floor_base = f"http://{HOST}:{floor.port}"
            await wait_http(proxy_base)
            await wait_http(floor_base)
            channel, grpc_unary, grpc_stream = grpc_calls(proxy.target)
            proxy_http, http_unary, http_stream = http_calls(http_port, concurrency)
            floor_http, floor_unary, floor_stream = http_calls(floor.port, concurrency)
            assert floor.process is not None
            scenarios = [
                ("unary", "proxy gRPC", grpc_unary, proxy.pid),
                ("unary", "proxy HTTP", http_unary, proxy.pid),
                ("unary", "HTTP floor", floor_unary, floor.process.pid),
                ("stream", "proxy gRPC", grpc_stream, proxy.pid),
                ("stream", "proxy HTTP", http_stream, proxy.pid),
                ("stream", "HTTP floor", floor_stream, floor.process.pid),
            ]
            tallies = {(name, server): Tally() for name, server, _, _ in scenarios}
            # Warm-up: imports, caches and connection pools, not measured.
            for _, _, call, pid in scenarios:
                await drive(call, concurrency, 0.5, pid, Tally())
            for _ in range(rounds):
                for name, server, call, pid in scenarios:
                    await drive(call, concurrency, seconds, pid, tallies[(name, server)])
            await channel.close(None)
            await proxy_http.close()
            await floor_http.close()
        finally:
            proxy.stop()
            if floor.process is not None:
                floor.process.terminate()
                floor.process.wait(timeout=10)
    return [tally.row(name, server) for (name, server), tally in tallies.items()]


def table(rows: list[dict[str, object]], concurrency: int) -> str:
    def fmt(value: object, digits: int = 2) -> str:
        return (
            "-"
            if value is None
            else f"{value:,.{digits}f}"
            if isinstance(value, float)
            else str(value)
        )

    lines = [
        f"| load (c={concurrency}) | server | req/s | p50 ms | TTFC p50 ms | server CPU µs/req |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['server']} | {fmt(row['req_per_s'], 0)} | "
            f"{fmt(row['p50_ms'])} | {fmt(row['ttfc_p50_ms'])} | {fmt(row['cpu_us_per_req'], 0)} |"
        )
    by = {(row["scenario"], row["server"]): row for row in rows}
    for load in ("unary", "stream"):
        http_cpu = by[(load, "proxy HTTP")]["cpu_us_per_req"]
        grpc_cpu = by[(load, "proxy gRPC")]["cpu_us_per_req"]
        assert isinstance(http_cpu, float) and isinstance(grpc_cpu, float)
        ratio = http_cpu / grpc_cpu if grpc_cpu else float("nan")
        verdict = "met" if ratio <= 1.5 else "missed"
        lines.append("")
        lines.append(
            f"{load}: HTTP costs {ratio:.2f}x the gRPC path's server CPU per request "
            f"(target <= 1.5x: {verdict})."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="per scenario per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.concurrency, args.seconds, args.rounds))
    for row in rows:
        print(json.dumps(row))
    text = table(rows, args.concurrency)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
