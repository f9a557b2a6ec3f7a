"""The usage ledger's rows and the totals reports are made of."""

from __future__ import annotations

from enum import StrEnum

from domain.value import value_object


@value_object
class UsageEntry:
    """One finished request, as kept durably for accounting and budgets."""

    # Unix seconds when the request finished.
    time: float
    request_id: str
    # Which protocol the request came in over ("grpc"), and whether it was unary or a stream.
    transport: str
    kind: str
    subject: str
    team: str | None
    # The resolved model id; None when the requested name did not resolve.
    model: str | None
    # "ok" or the error code that ended the request.
    outcome: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    duration_s: float
    first_chunk_s: float | None


class GroupBy(StrEnum):
    SUBJECT = "subject"
    TEAM = "team"
    MODEL = "model"


@value_object
class UsageTotal:
    """Sums over the ledger rows of one subject, team or model."""

    # The subject, team or model; None for rows without one (no team, unresolved model).
    key: str | None
    requests: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@value_object
class DailyUsage:
    """Tokens and cost of one subject (of one team) on one model during one UTC day."""

    day_start: float
    subject: str
    team: str | None
    model: str | None
    tokens: int
    cost_usd: float
