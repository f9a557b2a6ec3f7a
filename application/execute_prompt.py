"""Use case: answer a prompt in one piece."""

from __future__ import annotations

import asyncio

from application._common import PromptUseCase, outcome_of
from domain.answer import Answer, Failure, FinishReason
from domain.errors import ProxyError, UpstreamTimeout
from domain.outcome import Method
from domain.principal import CallContext
from domain.request import PromptRequest


class ExecutePrompt(PromptUseCase):
    async def __call__(self, request: PromptRequest, context: CallContext) -> Answer | Failure:
        # Without tracing the span is skipped entirely rather than opened as a no-op.
        if self._tracer is None:
            return await self._run(request, context)
        with self._tracer.span("llm_proxy.ExecutePrompt") as span:
            result = await self._run(request, context)
            span.set_attribute("llm_proxy.request_id", result.request_id)
            if isinstance(result, Answer):
                span.set_attribute("llm_proxy.model", result.model_id)
                span.set_attribute("llm_proxy.outcome", "ok")
            else:
                span.set_attribute("llm_proxy.outcome", result.error.code)
            return result

    async def _run(self, request: PromptRequest, context: CallContext) -> Answer | Failure:
        self._observer.request_started(Method.UNARY, context.transport)
        pipeline = self._pipeline
        tally = pipeline.open_tally(Method.UNARY, pipeline.request_id_for(request), context)
        try:
            admitted = await pipeline.admit(tally, request, context)
            deadline = pipeline.deadlines.arm(admitted.timeout_s)
            try:
                output = await self._gateway.complete(admitted.invocation)
            except asyncio.CancelledError:
                if deadline.expired():
                    raise UpstreamTimeout(admitted.timeout_s) from None
                raise
            finally:
                pipeline.deadlines.disarm(deadline)
            tally.usage = output.usage
            if tally.prompt is not None:
                tally.answer = output.text
            metrics = pipeline.metrics(admitted, tally.started, output.usage)
            tally.cost_usd = metrics.cost_usd
            return Answer(
                tally.request_id,
                output.text,
                admitted.model.model_id,
                metrics,
                tool_calls=output.tool_calls,
                finish_reason=FinishReason.of(len(output.tool_calls)),
                resolved_model=output.resolved_model,
            )
        except ProxyError as error:
            tally.outcome = error.outcome
            return Failure(tally.request_id, error)
        except BaseException as error:
            tally.outcome = outcome_of(error)
            raise
        finally:
            pipeline.close_tally(tally, self._observer)
