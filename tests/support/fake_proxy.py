"""A scriptable stand-in for the proxy, for failures the real server cannot be made to produce
on demand (RESOURCE_EXHAUSTED with retry-after, UNAVAILABLE then success, a stream cut mid-way).

It runs on its own event loop in a background thread, so blocking clients can call it from the
test's thread and async clients from the test's loop alike. Each method is an async handler the
test may replace; every call's request and metadata are recorded.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[object, object]
ExecuteHandler = Callable[[pb.ExecuteRequest, Context], Awaitable[pb.ExecuteResponse]]
StreamHandler = Callable[[pb.ExecuteRequest, Context], AsyncIterator[pb.StreamChunk]]
InfoHandler = Callable[[pb.GetServerInfoRequest, Context], Awaitable[pb.GetServerInfoResponse]]


@dataclass(frozen=True)
class Call:
    method: str
    request: pb.ExecuteRequest | pb.GetServerInfoRequest
    metadata: dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def metrics(input_tokens: int = 2, output_tokens: int = 3) -> pb.ExecutionMetrics:
    return pb.ExecutionMetrics(
        duration_ms=5,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        cost_usd=0.001,
        timestamp=1_700_000_000,
    )


def info() -> pb.GetServerInfoResponse:
    return pb.GetServerInfoResponse(
        available_models=[
            pb.ModelInfo(
                model_id="echo",
                display_name="Echo",
                provider="llm-echo",
                supports_streaming=True,
                aliases=["parrot"],
            ),
            pb.ModelInfo(model_id="markov", display_name="Markov", supports_streaming=True),
        ],
        default_model="echo",
        limits=pb.ServerLimits(max_input_length=1000, request_timeout_seconds=30),
        server_version="0.0-fake",
        server_name="fake",
        model_aliases={"parrot": "echo"},
    )


def echo_text(request: pb.ExecuteRequest) -> str:
    system = "".join(request.system_fragments)
    user = "".join(request.user_fragments)
    return f"[{system}] {user}" if system else user


async def default_execute(request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
    return pb.ExecuteResponse(
        request_id=request.request_id,
        success=pb.ExecuteSuccess(
            response_text=echo_text(request),
            metrics=metrics(),
            actual_model_used=request.model_name or "echo",
        ),
    )


async def default_stream(
    request: pb.ExecuteRequest, context: Context
) -> AsyncIterator[pb.StreamChunk]:
    text = echo_text(request)
    for start in range(0, len(text), 4):
        yield pb.StreamChunk(request_id=request.request_id, text_chunk=text[start : start + 4])
    yield pb.StreamChunk(request_id=request.request_id, final_metrics=metrics())
    yield pb.StreamChunk(
        request_id=request.request_id,
        complete=pb.StreamComplete(actual_model_used=request.model_name or "echo"),
    )


async def default_info(
    request: pb.GetServerInfoRequest, context: Context
) -> pb.GetServerInfoResponse:
    return info()


@dataclass
class FakeProxy(pb_grpc.VibectlLLMProxyServicer):
    on_execute: ExecuteHandler = default_execute
    on_stream: StreamHandler = default_stream
    on_info: InfoHandler = default_info
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: grpc.aio.Server | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def _record(
        self, method: str, request: pb.ExecuteRequest | pb.GetServerInfoRequest, context: Context
    ) -> None:
        metadata = {
            key: value if isinstance(value, str) else value.decode()
            for key, value in (context.invocation_metadata() or ())
        }
        with self._lock:
            self.calls.append(Call(method, request, metadata))

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        self._record("Execute", request, context)
        return await self.on_execute(request, context)

    async def StreamExecute(
        self, request: pb.ExecuteRequest, context: Context
    ) -> AsyncIterator[pb.StreamChunk]:
        self._record("StreamExecute", request, context)
        async for chunk in self.on_stream(request, context):
            yield chunk

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake proxy serves no embeddings")
        raise AssertionError("abort raises")

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: Context
    ) -> pb.GetServerInfoResponse:
        self._record("GetServerInfo", request, context)
        return await self.on_info(request, context)

    def start(self, port: int = 0, *, tls: tuple[bytes, bytes] | None = None) -> int:
        """Serve on 127.0.0.1:`port` (0: any free port); `tls` is (key PEM, cert chain PEM)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-proxy", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._serve(port, tls), loop).result(10)
        return self.port

    async def _serve(self, port: int, tls: tuple[bytes, bytes] | None) -> int:
        server = grpc.aio.server()
        pb_grpc.add_VibectlLLMProxyServicer_to_server(self, server)
        address = f"127.0.0.1:{port}"
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
        await server.start()
        self._server = server
        return bound

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    @property
    def url(self) -> str:
        return f"llm-proxy+insecure://127.0.0.1:{self.port}"
