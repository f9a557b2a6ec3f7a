"""The floor: a grpc.aio server speaking the same protocol with constant answers.

No model, no auth, no logging, no validation. Whatever the proxy measures above this is the
proxy's own cost. Run it as `python -m bench.floor --port P`.

Streams answer with one text chunk, then metrics and completion, like the echo model. A prompt
starting with `chunks=N` gets N chunks instead, so that 200-chunk streams have a floor too; the
chunk lists are built once per distinct prompt, so answering stays a dictionary lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import grpc

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


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_VibectlLLMProxyServicer_to_server(FloorServicer(), server)
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
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
