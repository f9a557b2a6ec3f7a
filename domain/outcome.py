"""The record of one finished request, for logs and metrics."""

from __future__ import annotations

from enum import StrEnum

from domain.usage import Usage
from domain.value import value_object


class Method(StrEnum):
    """How the answer is delivered, whatever the transport: whole, or chunk by chunk."""

    UNARY = "unary"
    STREAM = "stream"


@value_object
class RequestRecord:
    method: Method
    # Which transport carried the request ("grpc", ...); a label beside the method.
    transport: str
    request_id: str
    subject: str
    # The resolved model id, or None when resolution itself failed.
    model_id: str | None
    # "ok" or the error code that ended the request.
    outcome: str
    duration_s: float
    usage: Usage = Usage()
    cost_usd: float | None = None
    first_chunk_s: float | None = None
    chunks: int = 0
    team: str | None = None
    # Filled only when the operator enabled logging.log_prompts; otherwise never captured.
    prompt: str | None = None
    answer: str | None = None
    # The end user a client said it acted for, when it said so.
    end_user: str | None = None
