"""Use case: answer a prompt in one piece."""

from __future__ import annotations

import asyncio

from application._common import Admitted, PromptPipeline, outcome_of
from application.ports import ModelGateway, RequestObserver
from domain.answer import Answer, Failure
from domain.errors import ProxyError, UpstreamTimeout
from domain.outcome import Method, RequestRecord
from domain.principal import CallContext
from domain.request import PromptRequest
from domain.usage import Usage


class ExecutePrompt:
    def __init__(
        self, pipeline: PromptPipeline, gateway: ModelGateway, observer: RequestObserver
    ) -> None:
        self._pipeline = pipeline
        self._gateway = gateway
        self._observer = observer

    async def __call__(self, request: PromptRequest, context: CallContext) -> Answer | Failure:
        clock = self._pipeline.clock
        started = clock.monotonic()
        request_id = self._pipeline.request_id_for(request)
        model_id: str | None = None
        usage = Usage()
        cost: float | None = None
        outcome = "ok"
        admitted: Admitted | None = None
        try:
            admitted = self._pipeline.admit(request, request_id, context)
            model_id = admitted.model.model_id
            try:
                async with asyncio.timeout(admitted.timeout_s):
                    output = await self._gateway.complete(admitted.invocation)
            except TimeoutError:
                raise UpstreamTimeout(admitted.timeout_s) from None
            usage = output.usage
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
                )
            )
