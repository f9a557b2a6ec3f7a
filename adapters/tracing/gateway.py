"""A ModelGateway decorator that puts each upstream model call in a CLIENT span."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from application.ports import ModelGateway
from domain.answer import GatewayEvent, ModelOutput, UsageReport
from domain.errors import ProxyError
from domain.request import ModelInvocation
from domain.usage import Usage

from .provider import INSTRUMENTATION_NAME


def _record_usage(span: trace.Span, usage: Usage) -> None:
    if usage.input_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
    if usage.output_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)


def _record_failure(span: trace.Span, error: BaseException) -> None:
    code = error.code if isinstance(error, ProxyError) else type(error).__name__
    span.set_attribute("llm_proxy.error_code", code)
    span.set_status(Status(StatusCode.ERROR, code))


class TracedGateway:
    def __init__(self, inner: ModelGateway, provider: trace.TracerProvider) -> None:
        self._inner = inner
        self._tracer = provider.get_tracer(INSTRUMENTATION_NAME)

    def _start(self, operation: str, invocation: ModelInvocation) -> trace.Span:
        return self._tracer.start_span(
            f"llm_proxy.model.{operation}",
            kind=SpanKind.CLIENT,
            attributes={"gen_ai.request.model": invocation.model_id},
        )

    async def complete(self, invocation: ModelInvocation) -> ModelOutput:
        span = self._start("complete", invocation)
        try:
            output = await self._inner.complete(invocation)
        except BaseException as error:
            _record_failure(span, error)
            raise
        else:
            _record_usage(span, output.usage)
            return output
        finally:
            span.end()

    async def stream(self, invocation: ModelInvocation) -> AsyncGenerator[GatewayEvent, None]:
        # The span is not made current: it is a leaf, and attaching a context inside a
        # generator would leak it into the consumer between chunks.
        span = self._start("stream", invocation)
        chunks = 0
        try:
            async with aclosing(self._inner.stream(invocation)) as events:
                async for event in events:
                    if isinstance(event, UsageReport):
                        _record_usage(span, event.usage)
                    else:
                        chunks += 1
                    yield event
        except BaseException as error:
            _record_failure(span, error)
            raise
        finally:
            span.set_attribute("llm_proxy.chunks", chunks)
            span.end()
