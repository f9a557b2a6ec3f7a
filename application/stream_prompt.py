"""Use case: answer a prompt chunk by chunk as the model produces it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from application._common import Admitted, PromptPipeline, outcome_of
from application.observability import prompt_text
from application.ports import ModelGateway, RequestObserver, Tracer
from domain.answer import Failure, StreamEvent, StreamFinished, TextChunk, UsageReport
from domain.errors import ProxyError, UpstreamTimeout
from domain.outcome import Method, RequestRecord
from domain.principal import CallContext
from domain.request import PromptRequest
from domain.usage import Usage


@dataclass(frozen=True, slots=True)
class OpenedStream:
    request_id: str
    events: AsyncIterator[StreamEvent]


class StreamPrompt:
    def __init__(
        self,
        pipeline: PromptPipeline,
        gateway: ModelGateway,
        observer: RequestObserver,
        tracer: Tracer | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._gateway = gateway
        self._observer = observer
        self._tracer = tracer

    def __call__(self, request: PromptRequest, context: CallContext) -> OpenedStream:
        request_id = self._pipeline.request_id_for(request)
        events = self._events(request, request_id, context)
        if self._tracer is not None:
            events = self._traced(self._tracer, request_id, events)
        return OpenedStream(request_id, events)

    @staticmethod
    async def _traced(
        tracer: Tracer, request_id: str, events: AsyncGenerator[StreamEvent, None]
    ) -> AsyncGenerator[StreamEvent, None]:
        # A wrapper generator rather than a span inside _events, so that without tracing the
        # stream pays for no extra layer per chunk.
        with tracer.span("llm_proxy.StreamPrompt") as span:
            span.set_attribute("llm_proxy.request_id", request_id)
            chunks = 0
            async with aclosing(events) as inner:
                async for event in inner:
                    if isinstance(event, TextChunk):
                        chunks += 1
                    elif isinstance(event, StreamFinished):
                        span.set_attribute("llm_proxy.model", event.model_id)
                        span.set_attribute("llm_proxy.outcome", "ok")
                    elif isinstance(event, Failure):
                        span.set_attribute("llm_proxy.outcome", event.error.code)
                    yield event
            span.set_attribute("llm_proxy.chunks", chunks)

    async def _events(
        self, request: PromptRequest, request_id: str, context: CallContext
    ) -> AsyncGenerator[StreamEvent, None]:
        self._observer.request_started(Method.STREAM)
        clock = self._pipeline.clock
        started = clock.monotonic()
        model_id: str | None = None
        usage = Usage()
        cost: float | None = None
        prompt: str | None = None
        # Collected only while prompt logging is on, so a normal stream keeps no copy.
        answer_parts: list[str] | None = None
        first_chunk_s: float | None = None
        chunks = 0
        outcome = "ok"
        admitted: Admitted | None = None
        try:
            admitted = self._pipeline.admit(request, request_id, context)
            model_id = admitted.model.model_id
            if admitted.policy.log_prompts:
                prompt = prompt_text(request)
                answer_parts = []
            # aclosing: a consumer that stops early must stop the model call now, not at GC.
            async with aclosing(self._model_events(admitted, started)) as model_events:
                async for event in model_events:
                    if isinstance(event, UsageReport):
                        usage = event.usage
                        continue
                    if first_chunk_s is None:
                        first_chunk_s = clock.monotonic() - started
                    chunks += 1
                    if answer_parts is not None:
                        answer_parts.append(event.text)
                    yield event
            metrics = self._pipeline.metrics(admitted, started, usage)
            cost = metrics.cost_usd
            yield StreamFinished(model_id, metrics)
        except ProxyError as error:
            outcome = error.code
            yield Failure(request_id, error)
        except BaseException as error:
            outcome = outcome_of(error)
            raise
        finally:
            if admitted is not None:
                self._pipeline.release()
            self._observer.request_finished(
                RequestRecord(
                    method=Method.STREAM,
                    request_id=request_id,
                    subject=context.principal.subject,
                    model_id=model_id,
                    outcome=outcome,
                    duration_s=clock.monotonic() - started,
                    usage=usage,
                    cost_usd=cost,
                    first_chunk_s=first_chunk_s,
                    chunks=chunks,
                    prompt=prompt,
                    answer="".join(answer_parts) if answer_parts is not None else None,
                )
            )

    async def _model_events(
        self, admitted: Admitted, started: float
    ) -> AsyncGenerator[TextChunk | UsageReport, None]:
        # The timeout bounds the whole stream, but is armed only around each wait for the
        # model so that it never fires while the consumer is busy sending a chunk.
        deadline = started + admitted.timeout_s
        clock = self._pipeline.clock
        async with aclosing(self._gateway.stream(admitted.invocation)) as upstream:
            iterator = aiter(upstream)
            while True:
                try:
                    async with asyncio.timeout(max(deadline - clock.monotonic(), 0.0)):
                        event = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise UpstreamTimeout(admitted.timeout_s) from None
                yield event
