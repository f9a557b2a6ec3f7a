"""What the proxy gives back: a whole answer, or the events of a streamed one."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import ProxyError
from domain.request import ToolCall
from domain.usage import ExecutionMetrics, Usage
from domain.value import value_object


class FinishReason(StrEnum):
    # The model finished its answer.
    STOP = "stop"
    # The model stopped to have the client run tools; their results make the next request.
    TOOL_CALLS = "tool_calls"

    @classmethod
    def of(cls, tool_calls: int) -> FinishReason:
        return cls.TOOL_CALLS if tool_calls else cls.STOP


@value_object
class Answer:
    request_id: str
    text: str
    model_id: str
    metrics: ExecutionMetrics
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason = FinishReason.STOP
    # The model's own name for what answered (e.g. a dated snapshot), when it reports one.
    resolved_model: str | None = None


@value_object
class TextChunk:
    text: str


@value_object
class StreamFinished:
    model_id: str
    metrics: ExecutionMetrics
    finish_reason: FinishReason = FinishReason.STOP
    resolved_model: str | None = None


@value_object
class ModelOutput:
    """What a model gateway returns for a whole (non-streamed) answer."""

    text: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    resolved_model: str | None = None


@value_object
class UsageReport:
    """Sent by a model gateway after the last chunk of a stream."""

    usage: Usage
    resolved_model: str | None = None


# Tool calls arrive whole: a gateway assembles a call's streamed pieces before sending it.
GatewayEvent = TextChunk | ToolCall | UsageReport


@value_object
class Failure:
    """An in-band error: the request was understood but could not be answered."""

    request_id: str
    error: ProxyError


StreamEvent = TextChunk | ToolCall | StreamFinished | Failure
