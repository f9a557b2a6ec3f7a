"""Use case: answer a prompt in one piece."""

from __future__ import annotations

import asyncio

from application._common import Admitted, PromptPipeline, outcome_of
from application.observability import prompt_text
from application.ports import ModelGateway, RequestObserver, Tracer
from domain.answer import Answer, Failure
from domain.errors import ProxyError, UpstreamTimeout
from domain.outcome import Method, RequestRecord
from domain.principal import CallContext
from domain.request import PromptRequest
from domain.usage import Usage


class ExecutePrompt:
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
        self._observer.request_started(Method.EXECUTE)
        clock = self._pipeline.clock
        started = clock.monotonic()
        request_id = self._pipeline.request_id_for(request)
        model_id: str | None = None
        usage = Usage()
        cost: float | None = None
        prompt: str | None = None
        answer: str | None = None
        outcome = "ok"
        admitted: Admitted | None = None
        try:
            admitted = self._pipeline.admit(request, request_id, context)
            model_id = admitted.model.model_id
            if admitted.policy.log_prompts:
                prompt = prompt_text(request)
            try:
                async with asyncio.timeout(admitted.timeout_s):
                    output = await self._gateway.complete(admitted.invocation)
            except TimeoutError:
                raise UpstreamTimeout(admitted.timeout_s) from None
            usage = output.usage
            if prompt is not None:
                answer = output.text
            metrics = self._pipeline.metrics(admitted, started, usage)
            cost = metrics.cost_usd
            return Answer(request_id, output.text, model_id, metrics)
        except ProxyError as error:
            outcome = error.code
            return Failure(request_id, error)
        except BaseException as error:
            outcome = outcome_of(error)
            raise
        finally:
            if admitted is not None:
                self._pipeline.release()
            self._observer.request_finished(
                RequestRecord(
                    method=Method.EXECUTE,
                    request_id=request_id,
                    subject=context.principal.subject,
                    model_id=model_id,
                    outcome=outcome,
                    duration_s=clock.monotonic() - started,
                    usage=usage,
                    cost_usd=cost,
                    prompt=prompt,
                    answer=answer,
                )
            )
