"""Latency summaries and the result record every scenario produces."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks.

    Interpolating (numpy's default) rather than taking the nearest rank keeps p99 of a small
    sample from jumping straight to the maximum.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = math.ceil(position)
    if lower == upper:
        return float(sorted_values[lower])
    fraction = position - lower
    return float(sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Milliseconds, from samples taken in seconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Iterable[float]) -> LatencySummary | None:
        values = sorted(seconds)
        if not values:
            return None
        return cls(
            count=len(values),
            p50_ms=percentile(values, 50) * 1e3,
            p90_ms=percentile(values, 90) * 1e3,
            p99_ms=percentile(values, 99) * 1e3,
            max_ms=values[-1] * 1e3,
            mean_ms=math.fsum(values) / len(values) * 1e3,
        )


def merge_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for one in counts:
        total.update(one)
    return dict(sorted(total.items()))


@dataclass(slots=True)
class ScenarioResult:
    """One JSON line of output. Fields that do not apply to a scenario stay None."""

    name: str
    target: str  # "proxy", "floor", "llm-floor" or "direct"
    mode: str  # "unary", "stream", "info", "open-streams", "startup", "idle", "soak"
    concurrency: int | None = None
    clients: int | None = None
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    duration_s: float | None = None
    rps: float | None = None
    latency: LatencySummary | None = None
    ttfc: LatencySummary | None = None
    chunks_per_stream: float | None = None
    server_rss_before_kb: int | None = None
    server_rss_after_kb: int | None = None
    server_cpu_s_per_req: float | None = None
    client_cpu_util: float | None = None
    client_bound: bool | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScenarioResult:
        values = dict(data)
        for key in ("latency", "ttfc"):
            if values.get(key) is not None:
                values[key] = LatencySummary(**values[key])
        return cls(**values)
