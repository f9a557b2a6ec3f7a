"""Steps shared by the prompt use cases: admission, model choice, timeouts, accounting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from application.admission import Admission, Reservation
from application.deadline import DeadlineWatch
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
from domain.capabilities import check_supported
from domain.catalog import Catalog, ModelDescription, requested_name
from domain.errors import ModelNotVisible, ProxyError, UnknownModel
from domain.outcome import Method, RequestRecord
from domain.policy import ServerPolicy
from domain.principal import CallContext, Principal
from domain.request import ModelInvocation, PromptRequest
from domain.usage import ExecutionMetrics, Usage
from domain.value import value_object

DEADLINE_BACKSTOP_S = 0.25


@value_object
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
    transport: str
    request_id: str
    subject: str
    team: str | None
    started: float
    # Known once the requested name resolves, even if the request is refused after that.
    model_id: str | None = None
    admitted: Admitted | None = None
    # What admission reserved for the request; closing the tally settles it.
    reservation: Reservation | None = None
    # Characters of text sent so far: what a stream cut short is charged for.
    output_chars: int = 0
    outcome: str = "ok"
    usage: Usage = Usage()
    cost_usd: float | None = None
    first_chunk_s: float | None = None
    chunks: int = 0
    # Set only while prompt logging is on, so a normal request keeps no copy of the text.
    prompt: str | None = None
    answer: str | None = None
    end_user: str | None = None


# A service built once by the container, not a value: runtime-frozen costs nothing here.
@dataclass(frozen=True, slots=True)
class PromptPipeline:
    catalog: ModelCatalog
    policy: PolicySource
    clock: Clock
    ids: IdGenerator
    # None admits everything: no rate or concurrency limits are enforced.
    admission: Admission | None = None
    deadlines: DeadlineWatch = field(default_factory=DeadlineWatch)

    def request_id_for(self, request: PromptRequest) -> str:
        return request.request_id or self.ids.new_request_id()

    async def admit(self, tally: Tally, request: PromptRequest, context: CallContext) -> Admitted:
        """Validate, admit, resolve and authorize, cheapest first.

        The caller's rate and concurrency limits come right after the checks that cost
        nothing, so that a caller over its limit is refused for that alone and its refused
        requests cannot make the server do more. The policy is read once, here, so that one
        request never sees two policies across a reload.
        """
        policy = self.policy.current()
        limits = policy.limits
        request.validate(limits)
        principal = context.principal
        catalog = self.catalog.current()
        model = catalog.find(request.model)
        if model is not None:
            tally.model_id = model.model_id
        if self.admission is not None:
            tally.reservation = await self.admission.admit(
                principal, tally.model_id, request, policy
            )
        if model is None:
            raise UnknownModel(requested_name(request.model), visible_names(catalog, principal))
        if not principal.may_use(model):
            # To a restricted caller a model outside its claim is the same as one that does not
            # exist: the refusal names only what it asked for and what it may use.
            raise ModelNotVisible(requested_name(request.model), visible_names(catalog, principal))
        request.check_content(limits)
        check_supported(
            model, request, lambda: [other for other in catalog.models if principal.may_use(other)]
        )
        timeout_s = limits.request_timeout_seconds
        if context.time_remaining is not None:
            # The transport cancels the call at the client's deadline, which the client sees
            # as DEADLINE_EXCEEDED; this later backstop only guarantees the model is stopped.
            timeout_s = min(timeout_s, max(context.time_remaining, 0.0) + DEADLINE_BACKSTOP_S)
        admitted = Admitted(
            request_id=tally.request_id,
            model=model,
            invocation=ModelInvocation(
                model_id=model.model_id,
                messages=request.messages,
                options=request.options,
                schema=request.schema,
                tools=request.tools,
                handle=model.handle,
            ),
            policy=policy,
            timeout_s=timeout_s,
        )
        tally.admitted = admitted
        if policy.log_prompts:
            tally.prompt = prompt_text(request)
        return admitted

    def open_tally(self, method: Method, request_id: str, context: CallContext) -> Tally:
        principal = context.principal
        return Tally(
            method,
            context.transport,
            request_id,
            principal.subject,
            principal.team,
            self.clock.monotonic(),
            end_user=context.end_user,
        )

    def close_tally(self, tally: Tally, observer: RequestObserver) -> None:
        """Release the request's admission and report it, whatever way it ended."""
        if tally.reservation is not None and self.admission is not None:
            self.admission.settle(tally.reservation, tally.usage, tally.output_chars)
            tally.reservation = None
        observer.request_finished(
            RequestRecord(
                method=tally.method,
                transport=tally.transport,
                request_id=tally.request_id,
                subject=tally.subject,
                model_id=tally.model_id,
                outcome=tally.outcome,
                duration_s=self.clock.monotonic() - tally.started,
                usage=tally.usage,
                cost_usd=tally.cost_usd,
                first_chunk_s=tally.first_chunk_s,
                chunks=tally.chunks,
                team=tally.team,
                prompt=tally.prompt,
                answer=tally.answer,
                end_user=tally.end_user,
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


def visible_names(catalog: Catalog, principal: Principal) -> tuple[str, ...]:
    """The model ids and aliases of `catalog` that `principal` may use."""
    if principal.allowed_models is None:
        return catalog.names()
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
