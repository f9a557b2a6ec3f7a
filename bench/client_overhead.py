"""What the client library costs on top of a raw generated stub.

`python -m bench.client_overhead [--calls N] [--rounds R]`

A minimal servicer runs in a child process (so its work does not share our GIL) and answers
at once; the same calls go through the raw stub and through ProxyClient / AsyncProxyClient in
alternating rounds, so drift in machine load hits both sides alike. Reported: median and p99
per call in microseconds, and the median difference.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection

import grpc
import grpc.aio

from llm_proxy_client import AsyncProxyClient, ProxyClient
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

METRICS = pb.ExecutionMetrics(duration_ms=1, input_tokens=2, output_tokens=3, total_tokens=5)
TEXT = "the quick brown fox jumps over the lazy dog " * 4


class _Instant(pb_grpc.VibectlLLMProxyServicer):
    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ExecuteResponse:
        return pb.ExecuteResponse(
            request_id=request.request_id,
            success=pb.ExecuteSuccess(
                response_text=TEXT, metrics=METRICS, actual_model_used="bench"
            ),
        )

    async def StreamExecute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamChunk]:
        for word in TEXT.split(" ")[:8]:
            yield pb.StreamChunk(request_id=request.request_id, text_chunk=word + " ")
        yield pb.StreamChunk(request_id=request.request_id, final_metrics=METRICS)
        yield pb.StreamChunk(
            request_id=request.request_id,
            complete=pb.StreamComplete(actual_model_used="bench"),
        )

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.EmbedResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this stand-in serves no embeddings")
        raise AssertionError("abort raises")

    async def GetServerInfo(
        self,
        request: pb.GetServerInfoRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.GetServerInfoResponse:
        return pb.GetServerInfoResponse(default_model="bench")


def _serve(ready: Connection) -> None:
    async def run() -> None:
        server = grpc.aio.server()
        pb_grpc.add_VibectlLLMProxyServicer_to_server(_Instant(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.send(port)
        await server.wait_for_termination()

    asyncio.run(run())


def _request() -> pb.ExecuteRequest:
    return pb.ExecuteRequest(user_fragments=["hello"], model_name="bench", request_id="r")


def _time_sync(call: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return samples


async def _time_async(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


def _row(name: str, raw: list[float], client: list[float]) -> str:
    def us(value: float) -> str:
        return f"{value * 1e6:8.0f}"

    raw_med, cli_med = statistics.median(raw), statistics.median(client)
    raw_p99 = statistics.quantiles(raw, n=100)[98]
    cli_p99 = statistics.quantiles(client, n=100)[98]
    return (
        f"| {name:<22} | {us(raw_med)} | {us(raw_p99)} | {us(cli_med)} | {us(cli_p99)} "
        f"| {us(cli_med - raw_med)} ({(cli_med / raw_med - 1) * 100:+5.1f}%) |"
    )


def _sync_bench(url: str, target: str, calls: int, rounds: int) -> list[str]:
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.VibectlLLMProxyStub(channel)
    client = ProxyClient(url)
    raw_exec: list[float] = []
    cli_exec: list[float] = []
    raw_stream: list[float] = []
    cli_stream: list[float] = []

    def raw_streamed() -> None:
        for _ in stub.StreamExecute(_request()):
            pass

    def client_streamed() -> None:
        stream = client.stream("hello", model="bench", request_id="r")
        for _ in stream:
            pass
        stream.result()

    for call in (lambda: stub.Execute(_request()), lambda: client.execute("hello")):
        _time_sync(call, 200)  # warm up connections and code paths
    for _ in range(rounds):
        raw_exec += _time_sync(lambda: stub.Execute(_request()), calls)
        cli_exec += _time_sync(
            lambda: client.execute("hello", model="bench", request_id="r"), calls
        )
        raw_stream += _time_sync(raw_streamed, calls)
        cli_stream += _time_sync(client_streamed, calls)
    client.close()
    channel.close()
    return [
        _row("sync execute", raw_exec, cli_exec),
        _row("sync stream (10 msgs)", raw_stream, cli_stream),
    ]


async def _async_bench(url: str, target: str, calls: int, rounds: int) -> list[str]:
    channel = grpc.aio.insecure_channel(target)
    stub = pb_grpc.VibectlLLMProxyStub(channel)
    raw_exec: list[float] = []
    cli_exec: list[float] = []
    raw_stream: list[float] = []
    cli_stream: list[float] = []
    async with AsyncProxyClient(url) as client:

        async def raw_execute() -> object:
            return await stub.Execute(_request())

        async def client_execute() -> object:
            return await client.execute("hello", model="bench", request_id="r")

        async def raw_streamed() -> None:
            async for _ in stub.StreamExecute(_request()):
                pass

        async def client_streamed() -> None:
            stream = client.stream("hello", model="bench", request_id="r")
            async for _ in stream:
                pass
            await stream.result()

        await _time_async(raw_execute, 200)
        await _time_async(client_execute, 200)
        for _ in range(rounds):
            raw_exec += await _time_async(raw_execute, calls)
            cli_exec += await _time_async(client_execute, calls)
            raw_stream += await _time_async(raw_streamed, calls)
            cli_stream += await _time_async(client_streamed, calls)
    await channel.close(None)
    return [
        _row("async execute", raw_exec, cli_exec),
        _row("async stream (10 msgs)", raw_stream, cli_stream),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=500, help="calls per side per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    ready, child_end = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child_end,), daemon=True)
    server.start()
    try:
        port = ready.recv()
        target = f"127.0.0.1:{port}"
        url = f"llm-proxy+insecure://{target}"
        rows = _sync_bench(url, target, args.calls, args.rounds)
        rows += asyncio.run(_async_bench(url, target, args.calls, args.rounds))
    finally:
        server.terminate()
        server.join()
    print(f"{args.calls * args.rounds} calls per cell, microseconds per call")
    print(
        "| path                   | raw med  | raw p99  | cli med  | cli p99  | overhead (med)   |"
    )
    print(
        "|------------------------|----------|----------|----------|----------|------------------|"
    )
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
