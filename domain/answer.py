"""What the proxy gives back: a whole answer, or the events of a streamed one."""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import ProxyError
from domain.usage import ExecutionMetrics, Usage


@dataclass(frozen=True, slots=True)
class Answer:
    request_id: str
    text: str
    model_id: str
    metrics: ExecutionMetrics


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str


@dataclass(frozen=True, slots=True)
class StreamFinished:
    model_id: str
    metrics: ExecutionMetrics


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """What a model gateway returns for a whole (non-streamed) answer."""

    text: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Sent by a model gateway after the last chunk of a stream."""

    usage: Usage


GatewayEvent = TextChunk | UsageReport


@dataclass(frozen=True, slots=True)
class Failure:
    """An in-band error: the request was understood but could not be answered."""

    request_id: str
    error: ProxyError


StreamEvent = TextChunk | StreamFinished | Failure
