"""What the blocking and the asyncio client share; each adds only how it waits on the transport.

Every decision (which request to send, whether a failure is retried, which error it becomes,
when cached server info is stale) lives here once, so the two clients cannot drift apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import Generic, TypeVar

import grpc

from llm_proxy_client import _protocol as proto
from llm_proxy_client.connection import Attempts, ConnectionSettings, RetryPolicy
from llm_proxy_client.errors import ProxyClientError, StreamInterruptedError
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.types import Attachment, Message, ServerInfo, Tool

DEFAULT_TIMEOUT = 120.0
DEFAULT_SERVER_INFO_TTL = 60.0

StreamT = TypeVar("StreamT", covariant=True)
ResultT = TypeVar("ResultT", covariant=True)


class ClientBase(Generic[StreamT, ResultT]):
    """Connection settings, request building, retry decisions and the server-info cache.

    ``StreamT`` and ``ResultT`` are what ``stream()`` and ``execute()`` return: a blocking
    iterator and a result, or an async iterator and an awaitable result.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
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
            client_cert=client_cert,
            client_key=client_key,
            tls_server_name=tls_server_name,
            env=env,
        )
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.server_info_ttl = server_info_ttl
        self._metadata = self.settings.metadata()
        self._info: tuple[ServerInfo, float] | None = None
        self._open()

    def _open(self) -> None:
        """Set up the transport; each client opens its channel its own way."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        return str(self.settings.address)

    def execute(
        self,
        prompt: proto.Prompt | None = None,
        *,
        model: str | None = None,
        system: proto.Prompt | None = None,
        schema: proto.Schema | None = None,
        messages: Sequence[Message] = (),
        options: Mapping[str, object] | None = None,
        attachments: Sequence[Attachment] = (),
        tools: Sequence[Tool] = (),
        request_id: str | None = None,
        timeout: float | EllipsisType | None = ...,
    ) -> ResultT:
        """Send a prompt (a string or a list of fragments) and get the whole answer (``await``
        it on the asyncio client). ``timeout`` overrides the client's for this call.

        ``messages`` is the conversation so far (the prompt, if given, is its last user turn);
        ``options`` the model's options (``{"temperature": 0.2}``); ``attachments`` go with the
        last user turn; ``tools`` are offered to the model, whose calls come back in the
        result's ``tool_calls`` for the caller to run and answer with a ``tool`` message.
        """
        content = proto.Content(
            prompt, system, schema, tuple(messages), options, tuple(attachments), tuple(tools)
        )
        return self._execute(*self._prepare(content, model, request_id, timeout))

    def stream(
        self,
        prompt: proto.Prompt | None = None,
        *,
        model: str | None = None,
        system: proto.Prompt | None = None,
        schema: proto.Schema | None = None,
        messages: Sequence[Message] = (),
        options: Mapping[str, object] | None = None,
        attachments: Sequence[Attachment] = (),
        tools: Sequence[Tool] = (),
        request_id: str | None = None,
        timeout: float | EllipsisType | None = ...,
    ) -> StreamT:
        """Start a streamed answer (arguments as for :meth:`execute`): iterate it (``for``, or
        ``async for`` on the asyncio client) for text chunks; then its ``result()`` holds the
        model used, metrics and any tool calls. Nothing is sent until iteration starts."""
        content = proto.Content(
            prompt, system, schema, tuple(messages), options, tuple(attachments), tuple(tools)
        )
        return self._new_stream(*self._prepare(content, model, request_id, timeout))

    def _execute(self, request: pb.ExecuteRequest, attempts: Attempts) -> ResultT:
        raise NotImplementedError

    def _new_stream(self, request: pb.ExecuteRequest, attempts: Attempts) -> StreamT:
        raise NotImplementedError

    def _prepare(
        self,
        content: proto.Content,
        model: str | None,
        request_id: str | None,
        timeout: float | EllipsisType | None,
    ) -> tuple[pb.ExecuteRequest, Attempts]:
        request = proto.build_request(
            content, model=model, request_id=request_id or proto.new_request_id()
        )
        return request, self._attempts(timeout)

    def _attempts(self, timeout: float | EllipsisType | None) -> Attempts:
        # `...` means "the client's timeout": None already means "no deadline".
        return Attempts(self.retry, self.timeout if timeout is ... else timeout)

    def _cached_info(self, refresh: bool) -> ServerInfo | None:
        if refresh or self._info is None or self._info[1] <= time.monotonic():
            return None
        return self._info[0]

    def _remember_info(self, response: pb.GetServerInfoResponse) -> ServerInfo:
        info = proto.server_info_from(response)
        self._info = (info, time.monotonic() + self.server_info_ttl)
        return info

    def _retry_delay(self, exc: grpc.RpcError, attempts: Attempts, rid: str | None) -> float:
        """How long to wait before trying again; raises the caller's error when not retrying."""
        code, details, trailing = proto.status_of(exc)
        address = self.settings.address
        if code is grpc.StatusCode.UNAVAILABLE:
            hopeless = proto.handshake_error(address, details, rid)
            if hopeless is not None:
                raise hopeless from None
        delay = attempts.next_delay() if code is grpc.StatusCode.UNAVAILABLE else None
        if delay is None:
            raise proto.error_from_status(
                code,
                details,
                trailing,
                address=address,
                request_id=rid,
                attempts=attempts.retries + 1,
            ) from None
        return delay


class StreamBase:
    """One streamed answer's state. Retries happen only before the first chunk; a failure
    after that raises :class:`StreamInterruptedError` carrying the text already delivered."""

    def __init__(
        self, client: ClientBase[object, object], request: pb.ExecuteRequest, attempts: Attempts
    ) -> None:
        self._base = client
        self._request = request
        self._attempts = attempts
        self._state = proto.StreamAssembler(request.request_id)

    @property
    def request_id(self) -> str:
        return self._request.request_id

    @property
    def text(self) -> str:
        """Everything delivered so far."""
        return self._state.text

    def _retry_delay(self, exc: grpc.RpcError) -> float:
        if self._state.received:
            raise self._interrupted(exc) from None
        return self._base._retry_delay(exc, self._attempts, self.request_id)

    def _interrupted(self, exc: grpc.RpcError) -> ProxyClientError:
        code, details, trailing = proto.status_of(exc)
        address = self._base.address
        if code is grpc.StatusCode.UNAVAILABLE:
            return StreamInterruptedError(
                f"the connection to {address} failed mid-stream: {details or code.name}",
                partial_text=self._state.text,
                code=code.name,
                request_id=self.request_id,
            )
        return proto.error_from_status(
            code, details, trailing, address=self._base.settings.address, request_id=self.request_id
        )
