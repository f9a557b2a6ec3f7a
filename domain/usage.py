"""Token usage, prices and the metrics reported with every answer."""

from __future__ import annotations

from domain.value import value_object


@value_object
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@value_object
class ModelPrice:
    """US dollars per million tokens."""

    input_per_million: float
    output_per_million: float

    def cost(self, usage: Usage) -> float | None:
        if usage.input_tokens is None and usage.output_tokens is None:
            return None
        return self.cost_of(usage.input_tokens or 0, usage.output_tokens or 0)

    def cost_of(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


@value_object
class ExecutionMetrics:
    duration_ms: int
    timestamp: int
    usage: Usage = Usage()
    cost_usd: float | None = None
    retry_count: int = 0
