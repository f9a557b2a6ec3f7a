"""Use case: answer a prompt chunk by chunk as the model produces it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from application._common import PromptUseCase, outcome_of
from application.ports import Tracer
from domain.answer import (
    Failure,
    FinishReason,
    StreamEvent,
    StreamFinished,
    TextChunk,
    UsageReport,
)
from domain.errors import ProxyError, UpstreamTimeout
from domain.outcome import Method
from domain.principal import CallContext
from domain.request import PromptRequest


class OpenedStream:
    """A stream's events; the request is recorded when its last event is produced.

    Consume it as `async with opened as events:`, so that a consumer that stops before the end
    (an error while sending, an abort) ends the request on leaving the block, not at GC.

    Once the request is admitted, `timeout_s` bounds the whole stream, including the time the
    consumer takes to pass events on, and `read_timeout_s` how long passing one on may take.
    The model waits are bounded here; bounding the consumer's part is the consumer's job (a
    transport knows when its client stops reading): it calls give_up() and leaves the block.
    """

    __slots__ = ("_given_up", "events", "read_timeout_s", "request_id", "timeout_s")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.events: AsyncGenerator[StreamEvent, None]
        self.timeout_s: float | None = None
        self.read_timeout_s: float | None = None
        self._given_up: ProxyError | None = None

    def give_up(self, reason: ProxyError) -> None:
        """The consumer stops early for `reason`, which the request is recorded with."""
        self._given_up = reason

    @property
    def given_up(self) -> ProxyError | None:
        return self._given_up

    async def __aenter__(self) -> AsyncIterator[StreamEvent]:
        return self.events

    async def __aexit__(self, *exc_info: object) -> None:
        await self.events.aclose()


class StreamPrompt(PromptUseCase):
    def __call__(self, request: PromptRequest, context: CallContext) -> OpenedStream:
        opened = OpenedStream(self._pipeline.request_id_for(request))
        events = self._events(request, opened, context)
        if self._tracer is not None:
            events = self._traced(self._tracer, opened.request_id, events)
        opened.events = events
        return opened

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
        self, request: PromptRequest, opened: OpenedStream, context: CallContext
    ) -> AsyncGenerator[StreamEvent, None]:
        self._observer.request_started(Method.STREAM, context.transport)
        request_id = opened.request_id
        pipeline = self._pipeline
        clock = pipeline.clock
        tally = pipeline.open_tally(Method.STREAM, request_id, context)
        answer_parts: list[str] | None = None
        last: StreamFinished | Failure
        report = UsageReport(tally.usage)
        tool_calls = 0
        try:
            admitted = await pipeline.admit(tally, request, context)
            opened.timeout_s = admitted.timeout_s
            opened.read_timeout_s = admitted.policy.limits.client_read_timeout_seconds
            if tally.prompt is not None:
                answer_parts = []
            # The timeout bounds the whole stream, but fires only during a wait for the model,
            # never while the consumer is busy sending a chunk. (Waited for here rather than
            # in a generator of its own: one generator layer less on every event.)
            end = tally.started + admitted.timeout_s
            deadlines = pipeline.deadlines
            deadline = deadlines.arm(admitted.timeout_s, waiting=False)
            try:
                # aclosing: a consumer that stops early must stop the model now, not at GC.
                async with aclosing(self._gateway.stream(admitted.invocation)) as upstream:
                    iterator = aiter(upstream)
                    while True:
                        remaining = end - clock.monotonic()
                        if remaining <= 0:
                            # Spent while the consumer was sending: not one more wait.
                            raise UpstreamTimeout(admitted.timeout_s)
                        deadlines.wait(deadline, remaining)
                        try:
                            event = await anext(iterator)
                        except StopAsyncIteration:
                            break
                        except asyncio.CancelledError:
                            if deadline.expired():
                                raise UpstreamTimeout(admitted.timeout_s) from None
                            raise
                        finally:
                            deadline.waiting = False
                        if isinstance(event, UsageReport):
                            report = event
                            tally.usage = event.usage
                            continue
                        if tally.first_chunk_s is None:
                            tally.first_chunk_s = clock.monotonic() - tally.started
                        tally.chunks += 1
                        if isinstance(event, TextChunk):
                            tally.output_chars += len(event.text)
                            if answer_parts is not None:
                                answer_parts.append(event.text)
                        else:
                            tool_calls += 1
                        yield event
            finally:
                deadlines.disarm(deadline)
            metrics = pipeline.metrics(admitted, tally.started, tally.usage)
            tally.cost_usd = metrics.cost_usd
            last = StreamFinished(
                admitted.model.model_id,
                metrics,
                finish_reason=FinishReason.of(tool_calls),
                resolved_model=report.resolved_model,
            )
        except ProxyError as error:
            tally.outcome = error.outcome
            last = Failure(request_id, error)
        except BaseException as error:
            reason = opened.given_up
            tally.outcome = reason.outcome if reason is not None else outcome_of(error)
            raise
        finally:
            if answer_parts is not None:
                tally.answer = "".join(answer_parts)
            pipeline.close_tally(tally, self._observer)
        # Recorded before the last event is handed over: what the consumer does with it (a
        # transport aborts the call on a refusal) is no concern of the request's record.
        yield last
