"""Who is calling, and what they may use."""

from __future__ import annotations

from fnmatch import fnmatchcase

from domain.catalog import ModelDescription
from domain.value import value_object


@value_object
class Principal:
    subject: str
    # Model ids, aliases or glob patterns; None means every served model.
    allowed_models: tuple[str, ...] | None = None
    token_id: str | None = None
    # The caller's team or tenant (a token's `team` claim): shared limits and budgets.
    team: str | None = None

    def may_use(self, model: ModelDescription) -> bool:
        if self.allowed_models is None:
            return True
        names = (model.model_id, *model.aliases)
        return any(fnmatchcase(name, pattern) for pattern in self.allowed_models for name in names)


ANONYMOUS = Principal(subject="anonymous")


@value_object
class CallContext:
    """Per-call facts the transport knows and use cases need, free of transport types."""

    principal: Principal = ANONYMOUS
    # Seconds the client still allows, from its deadline; None when it set no deadline.
    time_remaining: float | None = None
    # The transport that carried the call, for metrics and logs ("grpc", ...).
    transport: str = "unspecified"
    # Who the caller says it acts for (OpenAI's `user`): recorded, never trusted for access.
    end_user: str | None = None
