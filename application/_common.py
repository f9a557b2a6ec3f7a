"""Steps shared by the prompt use cases: admission, model choice, timeouts, accounting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from application.admission import Admission
from application.observability import prompt_text
from application.ports import (
    Clock,
    IdGenerator,
    ModelCatalog,
    ModelGateway,
    PolicySource,
    RequestObserver,
    Tracer,
)
from domain.catalog import Catalog, ModelDescription
from domain.errors import PermissionDenied, ProxyError, UnknownModel
from domain.outcome import Method, RequestRecord
from domain.policy import ServerPolicy
from domain.principal import CallContext, Principal
from domain.request import ModelInvocation, PromptRequest
from domain.usage import ExecutionMetrics, Usage

DEADLINE_BACKSTOP_S = 0.25


@dataclass(frozen=True, slots=True)
class Admitted:
    request_id: str
    model: ModelDescription
    invocation: ModelInvocation
    policy: ServerPolicy
    timeout_s: float


@dataclass(slots=True)
class Tally:
    """What is known about one request so far; it becomes the request's record at the end."""

    method: Method
    request_id: str
    subject: str
    started: float
    # Known once the requested name resolves, even if the request is refused after that.
    model_id: str | None = None
    admitted: Admitted | None = None
    outcome: str = "ok"
    usage: Usage = Usage()
    cost_usd: float | None = None
    first_chunk_s: float | None = None
    chunks: int = 0
    # Set only while prompt logging is on, so a normal request keeps no copy of the text.
    prompt: str | None = None
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class PromptPipeline:
    catalog: ModelCatalog
    policy: PolicySource
    clock: Clock
    ids: IdGenerator
    # None admits everything: no rate or concurrency limits are enforced.
    admission: Admission | None = None

    def request_id_for(self, request: PromptRequest) -> str:
        return request.request_id or self.ids.new_request_id()

    def admit(self, tally: Tally, request: PromptRequest, context: CallContext) -> Admitted:
        """Validate, resolve, authorize and admit; the tally learns the model as soon as it is
        known, so a request refused after that is still recorded against its model."""
        policy = self.policy.current()
        request.validate(policy.limits.max_input_length)
        catalog = self.catalog.current()
        try:
            model = catalog.resolve(request.model)
        except UnknownModel as unknown:
            if context.principal.allowed_models is None:
                raise
            # A restricted caller learns only the names it could use, as in GetServerInfo.
            raise UnknownModel(
                unknown.requested, names_visible_to(catalog, context.principal)
            ) from None
        tally.model_id = model.model_id
        if not context.principal.may_use(model):
            raise PermissionDenied(
                f"{context.principal.subject!r} may not use model {model.model_id!r}; "
                "ask for a token that includes it"
            )
        schema = request.parsed_schema()
        timeout_s = policy.limits.request_timeout_seconds
        if context.time_remaining is not None:
            # The transport cancels the call at the client's deadline, which the client sees
            # as DEADLINE_EXCEEDED; this later backstop only guarantees the model is stopped.
            timeout_s = min(timeout_s, max(context.time_remaining, 0.0) + DEADLINE_BACKSTOP_S)
        # Last, so that requests rejected above do not spend the caller's rate allowance.
        if self.admission is not None:
            self.admission.enter(context.principal.subject)
        admitted = Admitted(
            request_id=tally.request_id,
            model=model,
            invocation=ModelInvocation(
                model_id=model.model_id,
                user_fragments=request.user_fragments,
                system_fragments=request.system_fragments,
                schema=schema,
            ),
            policy=policy,
            timeout_s=timeout_s,
        )
        tally.admitted = admitted
        if policy.log_prompts:
            tally.prompt = prompt_text(request)
        return admitted

    def release(self) -> None:
        """Pair of a successful admit(): the request no longer counts as in flight."""
        if self.admission is not None:
            self.admission.leave()

    def open_tally(self, method: Method, request_id: str, context: CallContext) -> Tally:
        return Tally(method, request_id, context.principal.subject, self.clock.monotonic())

    def close_tally(self, tally: Tally, observer: RequestObserver) -> None:
        """Release the request's admission and report it, whatever way it ended."""
        if tally.admitted is not None:
            self.release()
        observer.request_finished(
            RequestRecord(
                method=tally.method,
                request_id=tally.request_id,
                subject=tally.subject,
                model_id=tally.model_id,
                outcome=tally.outcome,
                duration_s=self.clock.monotonic() - tally.started,
                usage=tally.usage,
                cost_usd=tally.cost_usd,
                first_chunk_s=tally.first_chunk_s,
                chunks=tally.chunks,
                prompt=tally.prompt,
                answer=tally.answer,
            )
        )

    def metrics(self, admitted: Admitted, started: float, usage: Usage) -> ExecutionMetrics:
        price = admitted.policy.price_for(admitted.model.model_id)
        return ExecutionMetrics(
            duration_ms=round((self.clock.monotonic() - started) * 1000),
            timestamp=int(self.clock.now()),
            usage=usage,
            cost_usd=price.cost(usage) if price is not None else None,
        )


def outcome_of(error: BaseException) -> str:
    if isinstance(error, ProxyError):
        return error.code
    # GeneratorExit: the consumer of a stream closed it early, which is the client going away.
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL_ERROR"


def names_visible_to(catalog: Catalog, principal: Principal) -> tuple[str, ...]:
    """The model ids and aliases of `catalog` that `principal` may use."""
    return tuple(name for name in catalog.names() if principal.may_use(catalog.resolve(name)))


class PromptUseCase:
    """What both prompt use cases are built from."""

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
