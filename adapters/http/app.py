"""The OpenAI-compatible HTTP API: a Starlette app over the same use cases as gRPC.

The hot endpoints are plain ASGI callables routed by Starlette: they read headers and body
straight from the ASGI scope, so the transport adds little beyond HTTP parsing itself.
Everything a request can be refused for is decided before the first byte of the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.http import answers
from adapters.http.chat import ChatRequest, chat_request
from adapters.http.embeddings import EmbeddingsCall, embeddings_answer, embeddings_call
from adapters.http.errors import RequestTooLarge, encode, error_body, error_response_parts
from application.authentication import Credentials, IdentifyCaller
from application.describe_server import DescribeServer
from application.embed import EmbedText
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import OpenedStream, StreamPrompt
from domain.answer import Answer, Failure, StreamFinished, TextChunk
from domain.catalog import ModelDescription
from domain.embedding import EmbedRequest
from domain.errors import (
    AuthenticationFailed,
    ClientTooSlow,
    InvalidRequest,
    ProxyError,
    UnknownModel,
)
from domain.identifiers import identifier_problem
from domain.principal import CallContext, Principal
from domain.request import PromptRequest, ToolCall
from domain.value import value_object

log = logging.getLogger("llm_proxy.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The transport label of requests served here, in metrics and logs.
HTTP = "http"
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies in front (nginx) must pass each event on at once, not buffer the answer.
    (b"x-accel-buffering", b"no"),
]


@value_object
class HttpServices:
    execute: ExecutePrompt
    stream: StreamPrompt
    describe: DescribeServer
    embed: EmbedText
    identify: IdentifyCaller
    max_body_bytes: int


class ClientGone(Exception):
    """The client closed the connection before its answer was complete."""


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *(headers or ())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ProxyError, request_id: str | None = None) -> None:
    status, body, extra = error_response_parts(error)
    headers = [(name.encode(), value.encode()) for name, value in extra.items()]
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    await send_json(send, status, body, headers)


def header_values(scope: Scope, name: bytes) -> tuple[str, ...]:
    return tuple(value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name)


# Beside the ASGI TLS extension's own keys: the certificate's common name, which names the
# caller under mutual TLS as gRPC's x509_common_name does.
PEER_COMMON_NAME = "llm_proxy.client_cert_common_name"


def authenticate(identify: IdentifyCaller, scope: Scope) -> Principal:
    """The caller, or AuthenticationFailed; the same port and messages as for gRPC."""
    if not identify.enabled:
        return identify(Credentials())
    peer: str | None = None
    if identify.needs_peer_subject:
        tls = scope.get("extensions", {}).get("tls", {})
        peer = tls.get(PEER_COMMON_NAME)
    return identify(Credentials(header_values(scope, b"authorization"), peer))


async def read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    for value in header_values(scope, b"content-length"):
        if value.isdigit() and int(value) > limit:
            raise _too_large(int(value), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"the request body is {'at least ' if size == limit + 1 else ''}{size} bytes; this "
        f"server accepts at most {limit} (server.max_message_bytes)"
    )


class _DisconnectWatch:
    """Cancels the task answering a request when its client goes away, as gRPC cancels a call
    whose client cancelled: the model call stops instead of running for nobody."""

    __slots__ = ("_task", "fired")

    def __init__(self, receive: Receive) -> None:
        self.fired = False
        answering = asyncio.current_task()
        assert answering is not None
        self._task = asyncio.ensure_future(self._watch(receive, answering))

    async def _watch(self, receive: Receive, answering: asyncio.Task[Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.fired = True
        answering.cancel()

    def stop(self) -> None:
        self._task.cancel()


class _Endpoint:
    """What every POST endpoint does first: authenticate, read the body, watch the client."""

    def __init__(self, services: HttpServices) -> None:
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self._services
        try:
            principal = authenticate(services.identify, scope)
        except AuthenticationFailed as refused:
            log.info("unauthenticated call refused: %s", refused.message)
            await send_error(send, refused)
            return
        request_id = _request_id(scope)
        body: bytes | InvalidRequest
        try:
            body = await read_body(receive, scope, services.max_body_bytes)
        except ClientGone:
            return
        except RequestTooLarge as too_large:
            body = too_large
        malformed = identifier_problem("x-request-id", request_id)
        if malformed is not None:
            # The value is what must not reach a log line or a reply: a fresh id is used.
            body, request_id = malformed, ""
        watch = _DisconnectWatch(receive)
        try:
            await self.answer(body, request_id, principal, send)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            # The client left; the use case has recorded the request as cancelled.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        finally:
            watch.stop()

    async def answer(
        self, body: bytes | InvalidRequest, request_id: str, principal: Principal, send: Send
    ) -> None:
        raise NotImplementedError


class ChatCompletions(_Endpoint):
    """POST /v1/chat/completions, whole or streamed as server-sent events."""

    async def answer(
        self, body: bytes | InvalidRequest, request_id: str, principal: Principal, send: Send
    ) -> None:
        if isinstance(body, InvalidRequest):
            chat = ChatRequest(PromptRequest((), request_id=request_id, rejection=body))
        else:
            chat = chat_request(body, request_id)
        context = CallContext(principal=principal, transport=HTTP, end_user=chat.user)
        if chat.stream:
            await self._streamed(chat, context, send)
        else:
            await self._whole(chat, context, send)

    async def _whole(self, chat: ChatRequest, context: CallContext, send: Send) -> None:
        result = await self._services.execute(chat.prompt, context)
        if isinstance(result, Answer):
            await send_json(
                send,
                200,
                encode(answers.completion(result)),
                [(b"x-request-id", result.request_id.encode())],
            )
        else:
            await send_error(send, result.error, result.request_id)

    async def _streamed(self, chat: ChatRequest, context: CallContext, send: Send) -> None:
        opened = self._services.stream(chat.prompt, context)
        request_id = opened.request_id
        try:
            async with opened as events:
                # The first event decides the status: a refusal is an HTTP error, not a stream.
                first = await anext(events)
                if isinstance(first, Failure):
                    await send_error(send, first.error, request_id)
                    return
                writer = self._writer_for(request_id, chat, context, first)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [*_SSE_HEADERS, (b"x-request-id", request_id.encode())],
                    }
                )
                role = writer.role()
                await _send_event(send, role + _event_bytes(writer, chat, first), opened)
                async for event in events:
                    await _send_event(send, _event_bytes(writer, chat, event), opened)
                await send({"type": "http.response.body", "body": b""})
        except _ClientStalled:
            # Recorded as CLIENT_TOO_SLOW on leaving the block; the unfinished response makes
            # uvicorn close the connection.
            return

    def _writer_for(
        self,
        request_id: str,
        chat: ChatRequest,
        context: CallContext,
        first: TextChunk | ToolCall | StreamFinished,
    ) -> answers.ChunkWriter:
        # Every chunk names the same model: the one asked for, else the default the server
        # resolves an unnamed request to.
        model = chat.prompt.model
        if model is None:
            model = (
                first.model_id
                if isinstance(first, StreamFinished)
                else self._services.describe(context).default_model
            )
        return answers.ChunkWriter(request_id, model, int(time.time()))


def _event_bytes(
    writer: answers.ChunkWriter,
    chat: ChatRequest,
    event: TextChunk | ToolCall | StreamFinished | Failure,
) -> bytes:
    if isinstance(event, TextChunk):
        return writer.text(event.text)
    if isinstance(event, ToolCall):
        return writer.tool_call(event)
    if isinstance(event, StreamFinished):
        data = writer.finished(event)
        if chat.include_usage:
            data += writer.usage(event)
        return data + answers.DONE
    status, _, _ = error_response_parts(event.error)
    return answers.stream_error(
        error_body(event.error.message, status=status, code=event.error.code)
    )


class _ClientStalled(Exception):
    """The client accepted nothing for longer than limits.client_read_timeout_seconds."""


async def _send_event(send: Send, data: bytes, opened: OpenedStream) -> None:
    # uvicorn's send waits while the client's socket accepts nothing: bounded, so that a client
    # that stops reading does not hold its admission slot and its model forever.
    limit = opened.read_timeout_s
    message = {"type": "http.response.body", "body": data, "more_body": True}
    if limit is None:
        await send(message)
        return
    try:
        async with asyncio.timeout(limit):
            await send(message)
    except TimeoutError:
        opened.give_up(
            ClientTooSlow(
                f"the client accepted nothing for {limit:g}s "
                "(limits.client_read_timeout_seconds); the stream was ended"
            )
        )
        raise _ClientStalled from None


def _request_id(scope: Scope) -> str:
    given = header_values(scope, b"x-request-id")
    return given[0] if given else ""


class CreateEmbeddings(_Endpoint):
    """POST /v1/embeddings."""

    async def answer(
        self, body: bytes | InvalidRequest, request_id: str, principal: Principal, send: Send
    ) -> None:
        embed = self._services.embed
        if isinstance(body, InvalidRequest):
            call = EmbeddingsCall(EmbedRequest((), request_id=request_id, rejection=body))
        else:
            call = embeddings_call(body, request_id)
        context = CallContext(principal=principal, transport=HTTP, end_user=call.user)
        result = await embed(call.request, context)
        if isinstance(result, Failure):
            await send_error(send, result.error, result.request_id)
            return
        await send_json(
            send,
            200,
            encode(embeddings_answer(result, call.encoding)),
            [(b"x-request-id", result.request_id.encode())],
        )


class ModelList:
    """GET /v1/models and /v1/models/{id}: only what the caller may use."""

    def __init__(self, services: HttpServices) -> None:
        self._services = services

    async def list(self, request: Request) -> Response:
        description, refused = self._describe(request)
        if refused is not None:
            return refused
        assert description is not None
        data = [answers.model_entry(model) for model in description.models]
        data += [answers.model_entry(model) for model in self._embedding_models(request)]
        return _json_response(200, {"object": "list", "data": data})

    async def one(self, request: Request) -> Response:
        description, refused = self._describe(request)
        if refused is not None:
            return refused
        assert description is not None
        wanted = request.path_params["model_id"]
        for model in description.models:
            if wanted == model.model_id or wanted in model.aliases:
                return _json_response(200, answers.model_entry(model, wanted))
        for model in self._embedding_models(request):
            if wanted == model.model_id or wanted in model.aliases:
                return _json_response(200, answers.model_entry(model, wanted))
        target = description.aliases.get(wanted)
        for model in description.models:
            if model.model_id == target:
                return _json_response(200, answers.model_entry(model, wanted))
        names = [model.model_id for model in description.models] + sorted(description.aliases)
        return _error_response(UnknownModel(wanted, names))

    def _embedding_models(self, request: Request) -> tuple[ModelDescription, ...]:
        principal = request.scope["llm_proxy.principal"]
        return self._services.embed.models(CallContext(principal=principal, transport=HTTP))

    def _describe(self, request: Request) -> tuple[Any, Response | None]:
        try:
            principal = authenticate(self._services.identify, request.scope)
        except AuthenticationFailed as refused:
            log.info("unauthenticated call refused: %s", refused.message)
            return None, _error_response(refused)
        request.scope["llm_proxy.principal"] = principal
        return self._services.describe(CallContext(principal=principal, transport=HTTP)), None


def _json_response(status: int, value: object, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(value), status, headers, media_type="application/json")


def _error_response(error: ProxyError) -> Response:
    status, body, headers = error_response_parts(error)
    return Response(body, status, headers, media_type="application/json")


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    message = (
        f"{request.method} {request.url.path} does not exist here; this server offers GET "
        "/v1/models, POST /v1/chat/completions, POST /v1/embeddings, GET /healthz and GET /readyz"
        if status == 404
        else f"{request.method} is not allowed on {request.url.path}"
    )
    code = "not_found" if status == 404 else "method_not_allowed"
    return _json_response(status, error_body(message, status=status, code=code))


def build_app(services: HttpServices) -> Starlette:
    models = ModelList(services)
    return Starlette(
        routes=[
            Route("/v1/chat/completions", ChatCompletions(services), methods=["POST"]),
            Route("/v1/embeddings", CreateEmbeddings(services), methods=["POST"]),
            Route("/v1/models", models.list, methods=["GET"]),
            Route("/v1/models/{model_id:path}", models.one, methods=["GET"]),
        ],
        exception_handlers={404: _not_found, 405: _not_found},
    )
