"""Use case: embed texts with an embedding model, under the same rules as a prompt."""

from __future__ import annotations

import asyncio

from application._common import PromptPipeline, outcome_of
from application.ports import EmbeddingGateway, RequestObserver
from domain.answer import Failure
from domain.catalog import ModelDescription, requested_name
from domain.embedding import Embeddings, EmbedRequest
from domain.errors import ModelNotVisible, ProxyError, UnknownModel, UpstreamTimeout
from domain.outcome import Method
from domain.principal import CallContext, Principal
from domain.request import Message, PromptRequest, Role


class EmbedText:
    """Admission, visibility, timeouts and the request record are the prompt use cases' own
    (the pipeline's), so an embedding is limited and accounted for like any other request."""

    def __init__(
        self, pipeline: PromptPipeline, gateway: EmbeddingGateway, observer: RequestObserver
    ) -> None:
        self._pipeline = pipeline
        self._gateway = gateway
        self._observer = observer

    async def __call__(self, request: EmbedRequest, context: CallContext) -> Embeddings | Failure:
        self._observer.request_started(Method.UNARY, context.transport)
        pipeline = self._pipeline
        request_id = request.request_id or pipeline.ids.new_request_id()
        tally = pipeline.open_tally(Method.UNARY, request_id, context)
        try:
            policy = pipeline.policy.current()
            request.validate(policy.limits)
            models = self._gateway.models()
            model = _find(models, request.model)
            if model is not None:
                tally.model_id = model.model_id
            principal = context.principal
            if pipeline.admission is not None:
                # Admission estimates from a prompt's text: the texts to embed stand in for it.
                stand_in = PromptRequest(
                    (Message.of_text(Role.USER, *request.inputs),), model=request.model
                )
                tally.reservation = await pipeline.admission.admit(
                    principal, tally.model_id, stand_in, policy
                )
            visible = _names(models, principal)
            if model is None:
                raise UnknownModel(requested_name(request.model), visible)
            if not principal.may_use(model):
                raise ModelNotVisible(requested_name(request.model), visible)
            timeout_s = policy.limits.request_timeout_seconds
            if context.time_remaining is not None:
                timeout_s = min(timeout_s, max(context.time_remaining, 0.0) + 0.25)
            try:
                async with asyncio.timeout(timeout_s):
                    vectors, usage = await self._gateway.embed(model.model_id, request.inputs)
            except TimeoutError:
                raise UpstreamTimeout(timeout_s) from None
            tally.usage = usage
            price = policy.price_for(model.model_id)
            tally.cost_usd = price.cost(usage) if price is not None else None
            return Embeddings(request_id, model.model_id, vectors, usage)
        except ProxyError as error:
            tally.outcome = error.outcome
            return Failure(request_id, error)
        except BaseException as error:
            tally.outcome = outcome_of(error)
            raise
        finally:
            pipeline.close_tally(tally, self._observer)

    def models(self, context: CallContext) -> tuple[ModelDescription, ...]:
        """The embedding models the caller may use."""
        return tuple(m for m in self._gateway.models() if context.principal.may_use(m))


def _find(models: tuple[ModelDescription, ...], requested: str | None) -> ModelDescription | None:
    name = requested_name(requested)
    if name is None:
        return None
    for model in models:
        if name == model.model_id or name in model.aliases:
            return model
    return None


def _names(models: tuple[ModelDescription, ...], principal: Principal) -> tuple[str, ...]:
    visible = [model for model in models if principal.may_use(model)]
    return tuple(sorted(m.model_id for m in visible)) + tuple(
        sorted(alias for m in visible for alias in m.aliases)
    )
