"""asyncio client with the same behaviour as the blocking one, built on grpc.aio."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from types import EllipsisType
from typing import Any, TypeVar

import grpc
import grpc.aio

from llm_proxy_client import _protocol as proto
from llm_proxy_client._base import ClientBase, StreamBase
from llm_proxy_client.connection import Attempts
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from llm_proxy_client.types import ExecuteResult, ModelInfo, ServerInfo

T = TypeVar("T")


class AsyncProxyClient(ClientBase["AsyncTextStream", Coroutine[Any, Any, ExecuteResult]]):
    """The asyncio twin of :class:`ProxyClient` (same arguments); use it as ``async with`` or
    call ``close()``.

    A grpc.aio channel belongs to the event loop that first used it, so one client serves one
    loop; create another client for another loop.
    """

    def _open(self) -> None:
        # The channel waits for the first call, which runs on the loop it will belong to.
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.VibectlLLMProxyAsyncStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info_lock: asyncio.Lock | None = None

    def _connect(self) -> pb_grpc.VibectlLLMProxyAsyncStub:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
                raise RuntimeError(
                    "this AsyncProxyClient is bound to another event loop; create one per loop"
                )
            self._channel = self.settings.open_channel(
                grpc.aio.secure_channel, grpc.aio.insecure_channel
            )
            self._stub = pb_grpc.VibectlLLMProxyStub(self._channel)
            self._loop = loop
            self._info_lock = asyncio.Lock()
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
            self._stub = None

    async def __aenter__(self) -> AsyncProxyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _execute(self, request: pb.ExecuteRequest, attempts: Attempts) -> ExecuteResult:
        stub = self._connect()
        response = await self._unary(
            lambda t: stub.Execute(request, timeout=t, metadata=self._metadata),
            attempts,
            request.request_id,
        )
        return proto.result_from(response, request.request_id, attempts.retries)

    def _new_stream(self, request: pb.ExecuteRequest, attempts: Attempts) -> AsyncTextStream:
        return AsyncTextStream(self, request, attempts)

    async def server_info(
        self,
        *,
        refresh: bool = False,
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109
    ) -> ServerInfo:
        """The server's models, aliases and limits, cached for ``server_info_ttl`` seconds."""
        stub = self._connect()
        assert self._info_lock is not None
        async with self._info_lock:
            cached = self._cached_info(refresh)
            if cached is not None:
                return cached
            response = await self._unary(
                lambda t: stub.GetServerInfo(
                    pb.GetServerInfoRequest(), timeout=t, metadata=self._metadata
                ),
                self._attempts(timeout),
                None,
            )
            return self._remember_info(response)

    async def models(self, *, refresh: bool = False) -> tuple[ModelInfo, ...]:
        return (await self.server_info(refresh=refresh)).models

    async def _unary(
        self, call: Callable[[float | None], Awaitable[T]], attempts: Attempts, rid: str | None
    ) -> T:
        while True:
            try:
                return await call(attempts.remaining())
            except grpc.aio.AioRpcError as exc:
                await self._pause(self._retry_delay(exc, attempts, rid))

    async def _pause(self, delay: float) -> None:
        # See ProxyClient._pause: end the second half early once the channel reconnects.
        await asyncio.sleep(delay / 2)
        if self._channel is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._channel.channel_ready(), delay / 2)


class AsyncTextStream(StreamBase, AsyncIterator[str]):
    """The text of one streamed answer. Retries happen only before the first chunk arrives."""

    def __init__(
        self, client: AsyncProxyClient, request: pb.ExecuteRequest, attempts: Attempts
    ) -> None:
        super().__init__(client, request, attempts)
        self._client = client
        self._call: grpc.aio.UnaryStreamCall[pb.ExecuteRequest, pb.StreamChunk] | None = None
        self._chunks = self._run()

    def __aiter__(self) -> AsyncTextStream:
        return self

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def result(self) -> ExecuteResult:
        """The whole answer with model and metrics, reading whatever has not been read yet."""
        async for _ in self._chunks:
            pass
        return self._state.result(self._attempts.retries)

    async def aclose(self) -> None:
        if self._call is not None:
            self._call.cancel()
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[str, None]:
        client, state = self._client, self._state
        stub = client._connect()
        while True:
            call = stub.StreamExecute(
                self._request, timeout=self._attempts.remaining(), metadata=client._metadata
            )
            self._call = call
            try:
                async for chunk in call:
                    text = state.feed(chunk)
                    if text:
                        yield text
            except grpc.aio.AioRpcError as exc:
                await client._pause(self._retry_delay(exc))
                continue
            finally:
                if not state.complete:
                    call.cancel()
            state.result(self._attempts.retries)
            return
