"""Blocking client: one channel per client, reused by every call, safe to share across threads."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from types import EllipsisType, TracebackType
from typing import TypeVar

import grpc

from adapters.grpc.client import _protocol as proto
from adapters.grpc.client.connection import Attempts, ConnectionSettings, RetryPolicy
from adapters.grpc.client.errors import ProxyClientError, StreamInterruptedError
from adapters.grpc.client.types import ExecuteResult, ModelInfo, ServerInfo
from adapters.grpc.generated import llm_proxy_pb2 as pb
from adapters.grpc.generated import llm_proxy_pb2_grpc as pb_grpc

T = TypeVar("T")

DEFAULT_TIMEOUT = 120.0
DEFAULT_SERVER_INFO_TTL = 60.0
# grpc's connectivity poller wakes every 0.2 s; a little more covers one full period.
_POLLER_PERIOD = 0.25


# A `timeout=...` default means "use the client's timeout": None already means "no deadline".


class ProxyClient:
    """Talks to an llm-proxy server.

    ``url`` defaults to ``$LLM_PROXY_URL``, then ``llm-proxy+insecure://127.0.0.1:50051``.
    ``timeout`` is each call's total budget in seconds, retries included (None: no deadline).
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
        self._channel = _open_channel(self.settings)
        self._stub = pb_grpc.VibectlLLMProxyStub(self._channel)
        self._metadata = self.settings.metadata()
        self._info: tuple[ServerInfo, float] | None = None
        self._info_lock = threading.Lock()
        self._last_watch = -_POLLER_PERIOD

    @property
    def address(self) -> str:
        return str(self.settings.address)

    def close(self) -> None:
        # grpc's connectivity poller acts on a connect request up to 0.2 s after a watch ends;
        # closing the channel inside that window makes it raise in its thread, which would print
        # a traceback at exit. Only clients that just retried ever wait here.
        settle = self._last_watch + _POLLER_PERIOD - time.monotonic()
        if settle > 0:
            time.sleep(settle)
        self._channel.close()

    def __enter__(self) -> ProxyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def execute(
        self,
        prompt: proto.Prompt,
        *,
        model: str | None = None,
        system: proto.Prompt | None = None,
        schema: proto.Schema | None = None,
        request_id: str | None = None,
        timeout: float | EllipsisType | None = ...,
    ) -> ExecuteResult:
        """Send a prompt (a string or a list of fragments) and wait for the whole answer."""
        rid = request_id or proto.new_request_id()
        request = proto.build_request(
            prompt, model=model, system=system, schema=schema, request_id=rid
        )
        attempts = self._attempts(timeout)
        response = self._unary(
            lambda t: self._stub.Execute(request, timeout=t, metadata=self._metadata),
            attempts,
            rid,
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
    ) -> TextStream:
        """Start a streamed answer. Iterate it for text chunks; then ``.result()`` holds the
        model used and metrics. Nothing is sent until iteration starts."""
        rid = request_id or proto.new_request_id()
        request = proto.build_request(
            prompt, model=model, system=system, schema=schema, request_id=rid
        )
        return TextStream(self, request, self._attempts(timeout))

    def server_info(
        self, *, refresh: bool = False, timeout: float | EllipsisType | None = ...
    ) -> ServerInfo:
        """The server's models, aliases and limits, cached for ``server_info_ttl`` seconds."""
        with self._info_lock:
            now = time.monotonic()
            if not refresh and self._info is not None and self._info[1] > now:
                return self._info[0]
            response = self._unary(
                lambda t: self._stub.GetServerInfo(
                    pb.GetServerInfoRequest(), timeout=t, metadata=self._metadata
                ),
                self._attempts(timeout),
                None,
            )
            info = proto.server_info_from(response)
            self._info = (info, time.monotonic() + self.server_info_ttl)
            return info

    def models(self, *, refresh: bool = False) -> tuple[ModelInfo, ...]:
        return self.server_info(refresh=refresh).models

    def _attempts(self, timeout: float | EllipsisType | None) -> Attempts:
        return Attempts(self.retry, self.timeout if timeout is ... else timeout)

    def _unary(self, call: Callable[[float | None], T], attempts: Attempts, rid: str | None) -> T:
        while True:
            try:
                return call(attempts.remaining())
            except grpc.RpcError as exc:
                delay = _retry_delay(exc, attempts)
                if delay is None:
                    raise self._error(exc, rid, attempts) from None
                self._pause(delay)

    def _pause(self, delay: float) -> None:
        # Calls fail at once while gRPC backs off between connection attempts, so a retry timed
        # only by our own clock can land in that window and be wasted. The second half of each
        # pause therefore ends early as soon as the channel is connected again.
        time.sleep(delay / 2)
        ready = threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state is grpc.ChannelConnectivity.READY:
                ready.set()

        self._last_watch = time.monotonic()
        self._channel.subscribe(watch, try_to_connect=True)
        try:
            ready.wait(delay / 2)
        finally:
            self._channel.unsubscribe(watch)

    def _error(self, exc: grpc.RpcError, rid: str | None, attempts: Attempts) -> ProxyClientError:
        code, details, trailing = _status_of(exc)
        return proto.error_from_status(
            code,
            details,
            trailing,
            address=self.address,
            request_id=rid,
            attempts=attempts.retries + 1,
        )


class TextStream(Iterator[str]):
    """The text of one streamed answer, chunk by chunk.

    Retries happen only before the first chunk; a failure after that raises
    :class:`StreamInterruptedError` carrying the text already delivered.
    """

    def __init__(self, client: ProxyClient, request: pb.ExecuteRequest, attempts: Attempts) -> None:
        self._client = client
        self._request = request
        self._attempts = attempts
        self._state = proto.StreamAssembler(request.request_id)
        self._call: grpc.CallIterator[pb.StreamChunk] | None = None
        self._chunks = self._run()

    @property
    def request_id(self) -> str:
        return self._request.request_id

    @property
    def text(self) -> str:
        """Everything delivered so far."""
        return self._state.text

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def result(self) -> ExecuteResult:
        """The whole answer with model and metrics, reading whatever has not been read yet."""
        for _ in self._chunks:
            pass
        return self._state.result(self._attempts.retries)

    def close(self) -> None:
        """Stop reading; cancels the call on the server if it is still running."""
        if self._call is not None:
            _cancel(self._call)
        self._chunks.close()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> Generator[str, None, None]:
        client, state = self._client, self._state
        while True:
            call = client._stub.StreamExecute(
                self._request, timeout=self._attempts.remaining(), metadata=client._metadata
            )
            self._call = call
            try:
                for chunk in call:
                    text = state.feed(chunk)
                    if text:
                        yield text
            except grpc.RpcError as exc:
                if state.received:
                    raise _interrupted(client, exc, state) from None
                delay = _retry_delay(exc, self._attempts)
                if delay is None:
                    raise client._error(exc, self.request_id, self._attempts) from None
                client._pause(delay)
                continue
            finally:
                if not state.complete:
                    _cancel(call)
            state.result(self._attempts.retries)  # raises if the stream ended early
            return


def _interrupted(
    client: ProxyClient, exc: grpc.RpcError, state: proto.StreamAssembler
) -> ProxyClientError:
    code, details, trailing = _status_of(exc)
    mapped = proto.error_from_status(
        code, details, trailing, address=client.address, request_id=state.request_id
    )
    if code is grpc.StatusCode.UNAVAILABLE:
        return StreamInterruptedError(
            f"the connection to {client.address} failed mid-stream: {details or code.name}",
            partial_text=state.text,
            code=code.name,
            request_id=state.request_id,
        )
    return mapped


def _status_of(
    exc: grpc.RpcError,
) -> tuple[grpc.StatusCode | None, str | None, tuple[tuple[str, str | bytes], ...]]:
    # A bare RpcError (rare: raised by interceptors) lacks the Call accessors.
    try:
        return exc.code(), exc.details(), proto.metadata_pairs(exc.trailing_metadata())
    except AttributeError:
        return None, str(exc), ()


def _retry_delay(exc: grpc.RpcError, attempts: Attempts) -> float | None:
    code, _, _ = _status_of(exc)
    if code is not grpc.StatusCode.UNAVAILABLE:
        return None
    return attempts.next_delay()


def _cancel(call: grpc.RpcContext) -> None:
    call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs


def _open_channel(settings: ConnectionSettings) -> grpc.Channel:
    target = settings.address.target
    options = settings.channel_options()
    if settings.address.tls:
        return grpc.secure_channel(target, settings.channel_credentials(), options=options)
    return grpc.insecure_channel(target, options=options)
