"""Blocking client: one channel per client, reused by every call, safe to share across threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from types import EllipsisType
from typing import TypeVar

import grpc

from llm_proxy_client import _protocol as proto
from llm_proxy_client._base import (
    DEFAULT_SERVER_INFO_TTL,
    DEFAULT_TIMEOUT,
    ClientBase,
    StreamBase,
)
from llm_proxy_client.connection import Attempts
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from llm_proxy_client.types import ExecuteResult, ModelInfo, ServerInfo

__all__ = ["DEFAULT_SERVER_INFO_TTL", "DEFAULT_TIMEOUT", "ProxyClient", "TextStream"]

T = TypeVar("T")

# grpc's connectivity poller wakes every 0.2 s; a little more covers one full period.
_POLLER_PERIOD = 0.25


class ProxyClient(ClientBase["TextStream", ExecuteResult]):
    """Talks to an llm-proxy server.

    ``url`` defaults to ``$LLM_PROXY_URL``, then ``llm-proxy+insecure://127.0.0.1:50051``.
    ``timeout`` is each call's total budget in seconds, retries included (None: no deadline).
    ``client_cert``/``client_key`` (or ``$LLM_PROXY_CLIENT_CERT``/``$LLM_PROXY_CLIENT_KEY``)
    are PEM files for a server that requires mutual TLS.
    """

    def _open(self) -> None:
        self._channel = self.settings.open_channel(grpc.secure_channel, grpc.insecure_channel)
        self._stub = pb_grpc.VibectlLLMProxyStub(self._channel)
        self._info_lock = threading.Lock()
        self._last_watch = -_POLLER_PERIOD

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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _execute(self, request: pb.ExecuteRequest, attempts: Attempts) -> ExecuteResult:
        response = self._unary(
            lambda t: self._stub.Execute(request, timeout=t, metadata=self._metadata),
            attempts,
            request.request_id,
        )
        return proto.result_from(response, request.request_id, attempts.retries)

    def _new_stream(self, request: pb.ExecuteRequest, attempts: Attempts) -> TextStream:
        return TextStream(self, request, attempts)

    def server_info(
        self, *, refresh: bool = False, timeout: float | EllipsisType | None = ...
    ) -> ServerInfo:
        """The server's models, aliases and limits, cached for ``server_info_ttl`` seconds."""
        with self._info_lock:
            cached = self._cached_info(refresh)
            if cached is not None:
                return cached
            response = self._unary(
                lambda t: self._stub.GetServerInfo(
                    pb.GetServerInfoRequest(), timeout=t, metadata=self._metadata
                ),
                self._attempts(timeout),
                None,
            )
            return self._remember_info(response)

    def models(self, *, refresh: bool = False) -> tuple[ModelInfo, ...]:
        return self.server_info(refresh=refresh).models

    def _unary(self, call: Callable[[float | None], T], attempts: Attempts, rid: str | None) -> T:
        while True:
            try:
                return call(attempts.remaining())
            except grpc.RpcError as exc:
                self._pause(self._retry_delay(exc, attempts, rid))

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


class TextStream(StreamBase, Iterator[str]):
    """The text of one streamed answer, chunk by chunk.

    Retries happen only before the first chunk; a failure after that raises
    :class:`StreamInterruptedError` carrying the text already delivered.
    """

    def __init__(self, client: ProxyClient, request: pb.ExecuteRequest, attempts: Attempts) -> None:
        super().__init__(client, request, attempts)
        self._client = client
        self._call: grpc.CallIterator[pb.StreamChunk] | None = None
        self._chunks = self._run()

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

    def __exit__(self, *exc_info: object) -> None:
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
                client._pause(self._retry_delay(exc))
                continue
            finally:
                if not state.complete:
                    _cancel(call)
            state.result(self._attempts.retries)  # raises if the stream ended early
            return


def _cancel(call: grpc.RpcContext) -> None:
    call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
