"""The floor: a grpc.aio server speaking the same protocol with constant answers.

No model, no auth, no logging, no validation. Whatever the proxy measures above this is the
proxy's own cost. Run it as `python -m bench.floor --port P`.

Streams answer with one text chunk, then metrics and completion, like the echo model. A prompt
starting with `chunks=N` gets N chunks instead, so that 200-chunk streams have a floor too; the
chunk lists are built once per distinct prompt, so answering stays a dictionary lookup.

With `--llm MODEL` it is the *llm floor*: the same server, whose answers come from one call of
llm's async API on MODEL, made the way the proxy makes it for a one-turn text request, and
nothing else (no auth, admission, accounting or logging). The distance from the floor to the
llm floor is what calling llm costs; only the distance from the llm floor to the proxy is the
proxy's own.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import llm

from bench import bench_models
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

MODEL = "floor"
# The same size as what the echo model answers to "hello", so both put the same bytes on the wire.
TEXT = (
    '{\n  "prompt": "hello",\n  "system": "",\n  "attachments": [],\n  "stream": false,\n'
    '  "previous": []\n}'
)


def _metrics() -> pb.ExecutionMetrics:
    return pb.ExecutionMetrics(duration_ms=0, input_tokens=1, output_tokens=1, total_tokens=2)


_EXECUTE = pb.ExecuteResponse(
    success=pb.ExecuteSuccess(response_text=TEXT, metrics=_metrics(), actual_model_used=MODEL)
)
_INFO = pb.GetServerInfoResponse(
    available_models=[
        pb.ModelInfo(model_id=MODEL, display_name=MODEL, provider="bench", supports_streaming=True)
    ],
    default_model=MODEL,
    limits=pb.ServerLimits(),
    server_version="0",
    server_name="floor",
)
_TAIL = (
    pb.StreamChunk(final_metrics=_metrics()),
    pb.StreamChunk(complete=pb.StreamComplete(actual_model_used=MODEL)),
)
_ONE_CHUNK = (pb.StreamChunk(text_chunk=TEXT), *_TAIL)
_MAX_CACHED = 64


class FloorServicer(pb_grpc.VibectlLLMProxyServicer):
    def __init__(self) -> None:
        self._streams: dict[str, tuple[pb.StreamChunk, ...]] = {}

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ExecuteResponse:
        return _EXECUTE

    async def StreamExecute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamChunk]:
        for chunk in self._chunks_for(request):
            yield chunk

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetServerInfoResponse:
        return _INFO

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.EmbedResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the floor serves no embeddings")
        raise AssertionError("abort raises")

    def _chunks_for(self, request: pb.ExecuteRequest) -> tuple[pb.StreamChunk, ...]:
        if not request.user_fragments or not request.user_fragments[0].startswith("chunks="):
            return _ONE_CHUNK
        prompt = request.user_fragments[0]
        cached = self._streams.get(prompt)
        if cached is None:
            word = prompt.split()[0].removeprefix("chunks=")
            count = int(word) if word.isdigit() else 1
            cached = (*(pb.StreamChunk(text_chunk=f"w{i} ") for i in range(count)), *_TAIL)
            if len(self._streams) < _MAX_CACHED:
                self._streams[prompt] = cached
        return cached


class LlmFloorServicer(FloorServicer):
    """Answers Execute and StreamExecute from llm's async model of the requested name
    (`default_model` when none is named), including the bench's own models."""

    def __init__(self, default_model: str) -> None:
        super().__init__()
        bench_models.ensure_registered()
        self._default = default_model
        self._models = {default_model: llm.get_async_model(default_model)}

    def _prompt(self, request: pb.ExecuteRequest, *, stream: bool) -> Any:
        # Any: llm's response API is partly untyped (astream_events).
        name = request.model_name or self._default
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = llm.get_async_model(name)
        return model.prompt(
            fragments=list(request.user_fragments), system_fragments=None, stream=stream
        )

    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ExecuteResponse:
        text = await self._prompt(request, stream=False).text()
        return pb.ExecuteResponse(
            success=pb.ExecuteSuccess(
                response_text=text, metrics=_metrics(), actual_model_used=self._default
            )
        )

    async def StreamExecute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.StreamChunk]:
        async for event in self._prompt(request, stream=True).astream_events():
            if event.type == "text" and event.chunk:
                yield pb.StreamChunk(text_chunk=event.chunk)
        for chunk in _TAIL:
            yield chunk


async def serve(host: str, port: int, llm_model: str | None = None) -> None:
    server = grpc.aio.server()
    servicer = FloorServicer() if llm_model is None else LlmFloorServicer(llm_model)
    pb_grpc.add_VibectlLLMProxyServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"floor listening on {host}:{bound}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--llm", metavar="MODEL", help="answer from this llm model (llm floor)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.llm))


if __name__ == "__main__":
    main()
