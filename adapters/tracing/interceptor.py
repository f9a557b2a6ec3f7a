"""A SERVER span around each call, continuing the caller's trace from `traceparent` metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from .provider import INSTRUMENTATION_NAME

# Health probes and reflection would drown the traces that matter.
_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

Metadata = Iterable[tuple[str, str | bytes]]


class _MetadataGetter(Getter[Metadata]):
    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [v if isinstance(v, str) else v.decode() for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


def _finish(span: trace.Span, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    code = context.code()
    # context.code() is None when the handler returned normally.
    if code is not None and code != grpc.StatusCode.OK:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_status(Status(StatusCode.ERROR, code.name))
    else:
        span.set_attribute("rpc.grpc.status_code", 0)


if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # grpc's classes are generic only in grpc-stubs, not at run time
    _ServerInterceptor = grpc.aio.ServerInterceptor


class TracingInterceptor(_ServerInterceptor):
    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer(INSTRUMENTATION_NAME)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_UNTRACED_PREFIXES):
            return handler
        service, _, name = method.lstrip("/").rpartition("/")
        metadata: Metadata = handler_call_details.invocation_metadata or ()
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        tracer = self._tracer
        span_name = method.lstrip("/")

        def start() -> Any:
            parent = propagate.extract(metadata, getter=_GETTER)
            return tracer.start_as_current_span(
                span_name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                set_status_on_exception=False,
            )

        if handler.unary_unary is not None:
            # grpc-stubs type handlers as sync; under grpc.aio they are coroutine functions.
            unary: Any = handler.unary_unary

            async def traced_unary(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Any:
                with start() as span:
                    try:
                        return await unary(request, context)
                    finally:
                        _finish(span, context)

            return grpc.unary_unary_rpc_method_handler(
                traced_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streaming: Any = handler.unary_stream

            async def traced_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                with start() as span:
                    try:
                        async for response in streaming(request, context):
                            yield response
                    finally:
                        _finish(span, context)

            return grpc.unary_stream_rpc_method_handler(
                traced_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
