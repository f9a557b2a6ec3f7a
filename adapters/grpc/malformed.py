"""Request bodies that do not decode: a client error answered INVALID_ARGUMENT.

grpc decodes a request before any handler or interceptor sees it, and a body that is not the
message it should be (garbage bytes, a string field with bad UTF-8) would otherwise end as
UNKNOWN with an ERROR traceback in the log, for every call, credentials or not. Each handler's
decoder is wrapped to hand over a marker instead, which the handler answers.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from adapters.grpc.wrapping import HandlerWrapper
from application.ports import RefusalObserver

MALFORMED = "malformed_request"

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]


class _Undecodable:
    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _tolerant(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode_or_mark(data: bytes) -> Any:
        try:
            return decode(data)
        except DecodeError as error:
            # protobuf's message names the type and the fault, never the bytes.
            return _Undecodable(str(error))

    return decode_or_mark


class MalformedRequestGuard(HandlerWrapper):
    """Answers an undecodable request body INVALID_ARGUMENT, with one short (rate-limited)
    log line instead of a traceback. Placed innermost, so that authentication runs first."""

    def __init__(self, refusals: RefusalObserver) -> None:
        super().__init__()
        self._refusals = refusals

    def _wraps(self, method: str, handler: Handler) -> bool:
        # Streamed requests decode message by message inside grpc's read loop; only unary
        # requests (every method of the proxy's own service) are guarded here.
        return handler.request_deserializer is not None and not handler.request_streaming

    async def _refuse(self, context: Context, request: _Undecodable) -> None:
        message = f"the request body does not decode: {request.problem}"
        self._refusals.call_refused(MALFORMED, context.peer(), message)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    def _wrap(self, handler: Handler) -> Handler:
        decode = _tolerant(handler.request_deserializer)  # type: ignore[arg-type]
        refuse = self._refuse
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _guarded_call(handler.unary_unary, refuse), decode, handler.response_serializer
            )
        streaming: Any = handler.unary_stream
        if not inspect.isasyncgenfunction(streaming):
            # A stream written with context.write() (grpc's own health Watch), not yielded:
            # its behaviour is awaited like a unary one.
            return grpc.unary_stream_rpc_method_handler(
                _guarded_call(streaming, refuse), decode, handler.response_serializer
            )

        async def guarded_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await refuse(context, request)
            async for response in streaming(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            guarded_stream, decode, handler.response_serializer
        )


def _guarded_call(
    behaviour: Any, refuse: Callable[[Context, _Undecodable], Awaitable[None]]
) -> Any:
    """An awaited behaviour that answers an undecodable request with `refuse` instead."""

    async def guarded(request: Any, context: Context) -> Any:
        if isinstance(request, _Undecodable):
            await refuse(context, request)
        return await behaviour(request, context)

    return guarded
