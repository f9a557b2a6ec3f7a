"""asyncio client with the same behaviour as the blocking one, built on grpc.aio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from types import EllipsisType, TracebackType
from typing import TypeVar

import grpc
import grpc.aio

from adapters.grpc.client import _protocol as proto
from adapters.grpc.client.connection import Attempts, ConnectionSettings, RetryPolicy
from adapters.grpc.client.errors import ProxyClientError, StreamInterruptedError
from adapters.grpc.client.sync import DEFAULT_SERVER_INFO_TTL, DEFAULT_TIMEOUT
from adapters.grpc.client.types import ExecuteResult, ModelInfo, ServerInfo
from adapters.grpc.generated import llm_proxy_pb2 as pb
from adapters.grpc.generated import llm_proxy_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncProxyClient:
    """The asyncio twin of :class:`ProxyClient`; use it as ``async with`` or call ``close()``.

    A grpc.aio channel belongs to the event loop that first used it, so one client serves one
    loop; create another client for another loop.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        server_info_ttl: float = DEFAULT_SERVER_INFO_TTL,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = ConnectionSettings.create(
            url,
            token=token,
            token_file=token_file,
            ca_bundle=ca_bundle,
            tls_server_name=tls_server_name,
            env=env,
        )
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.server_info_ttl = server_info_ttl
        self._metadata = self.settings.metadata()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.VibectlLLMProxyAsyncStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info: tuple[ServerInfo, float] | None = None
        self._info_lock: asyncio.Lock | None = None

    @property
    def address(self) -> str:
        return str(self.settings.address)

    def _connect(self) -> pb_grpc.VibectlLLMProxyAsyncStub:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
                raise RuntimeError(
                    "this AsyncProxyClient is bound to another event loop; create one per loop"
                )
            self._channel = _open_channel(self.settings)
            self._stub = pb_grpc.VibectlLLMProxyStub(self._channel)
            self._loop = loop
            self._info_lock = asyncio.Lock()
        assert self._stub is not None
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
            self._stub = None

    async def __aenter__(self) -> AsyncProxyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def execute(
        self,
        prompt: proto.Prompt,
        *,
        model: str | None = None,
        system: proto.Prompt | None = None,
        schema: proto.Schema | None = None,
        request_id: str | None = None,
        # A gRPC deadline spanning retries, which an asyncio.timeout around the call can't give.
        timeout: float | EllipsisType | None = ...,  # noqa: ASYNC109
    ) -> ExecuteResult:
        """Send a prompt (a string or a list of fragments) and wait for the whole answer."""
        stub = self._connect()
        rid = request_id or proto.new_request_id()
        request = proto.build_request(
            prompt, model=model, system=system, schema=schema, request_id=rid
        )
        attempts = self._attempts(timeout)
        response = await self._unary(
            lambda t: stub.Execute(request, timeout=t, metadata=self._metadata), attempts, rid
        )
        return proto.result_from(response, rid, attempts.retries)

    def stream(
        self,
        prompt: proto.Prompt,
        *,
        model: str | None = None,
        system: proto.Prompt | None = None,
        schema: proto.Schema | None = None,
        request_id: str | None = None,
        timeout: float | EllipsisType | None = ...,
    ) -> AsyncTextStream:
        """Start a streamed answer: ``async for chunk in client.stream(...)``, then
        ``await stream.result()``. Nothing is sent until iteration starts."""
        rid = request_id or proto.new_request_id()
        request = proto.build_request(
            prompt, model=model, system=system, schema=schema, request_id=rid
        )
        return AsyncTextStream(self, request, self._attempts(timeout))

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
            if not refresh and self._info is not None and self._info[1] > time.monotonic():
                return self._info[0]
            response = await self._unary(
                lambda t: stub.GetServerInfo(
                    pb.GetServerInfoRequest(), timeout=t, metadata=self._metadata
                ),
                self._attempts(timeout),
                None,
            )
            info = proto.server_info_from(response)
            self._info = (info, time.monotonic() + self.server_info_ttl)
            return info

    async def models(self, *, refresh: bool = False) -> tuple[ModelInfo, ...]:
        return (await self.server_info(refresh=refresh)).models

    def _attempts(self, timeout: float | EllipsisType | None) -> Attempts:
        return Attempts(self.retry, self.timeout if timeout is ... else timeout)

    async def _unary(
        self, call: Callable[[float | None], Awaitable[T]], attempts: Attempts, rid: str | None
    ) -> T:
        while True:
            try:
                return await call(attempts.remaining())
            except grpc.aio.AioRpcError as exc:
                delay = _retry_delay(exc, attempts)
                if delay is None:
                    raise self._error(exc, rid, attempts) from None
                await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        # See ProxyClient._pause: end the second half early once the channel reconnects.
        await asyncio.sleep(delay / 2)
        if self._channel is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._channel.channel_ready(), delay / 2)

    def _error(
        self, exc: grpc.aio.AioRpcError, rid: str | None, attempts: Attempts
    ) -> ProxyClientError:
        return proto.error_from_status(
            exc.code(),
            exc.details(),
            proto.metadata_pairs(exc.trailing_metadata()),
            address=self.address,
            request_id=rid,
            attempts=attempts.retries + 1,
        )


class AsyncTextStream(AsyncIterator[str]):
    """The text of one streamed answer. Retries happen only before the first chunk arrives."""

    def __init__(
        self, client: AsyncProxyClient, request: pb.ExecuteRequest, attempts: Attempts
    ) -> None:
        self._client = client
        self._request = request
        self._attempts = attempts
        self._state = proto.StreamAssembler(request.request_id)
        self._call: grpc.aio.UnaryStreamCall[pb.ExecuteRequest, pb.StreamChunk] | None = None
        self._chunks = self._run()

    @property
    def request_id(self) -> str:
        return self._request.request_id

    @property
    def text(self) -> str:
        return self._state.text

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
                if state.received:
                    raise _interrupted(client, exc, state) from None
                delay = _retry_delay(exc, self._attempts)
                if delay is None:
                    raise client._error(exc, self.request_id, self._attempts) from None
                await client._pause(delay)
                continue
            finally:
                if not state.complete:
                    call.cancel()
            state.result(self._attempts.retries)
            return


def _interrupted(
    client: AsyncProxyClient, exc: grpc.aio.AioRpcError, state: proto.StreamAssembler
) -> ProxyClientError:
    if exc.code() is grpc.StatusCode.UNAVAILABLE:
        return StreamInterruptedError(
            f"the connection to {client.address} failed mid-stream: {exc.details()}",
            partial_text=state.text,
            code=exc.code().name,
            request_id=state.request_id,
        )
    return proto.error_from_status(
        exc.code(),
        exc.details(),
        proto.metadata_pairs(exc.trailing_metadata()),
        address=client.address,
        request_id=state.request_id,
    )


def _retry_delay(exc: grpc.aio.AioRpcError, attempts: Attempts) -> float | None:
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return None
    return attempts.next_delay()


def _open_channel(settings: ConnectionSettings) -> grpc.aio.Channel:
    target = settings.address.target
    options = settings.channel_options()
    if settings.address.tls:
        return grpc.aio.secure_channel(target, settings.channel_credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)
