"""Request metrics with bounded label sets.

Every label value comes from a closed set: methods and outcome codes are fixed by the code,
model ids are the *resolved* served ids (a name a client made up never resolves, so it is
counted under model="none"), and subjects are capped. Label children are cached so that the
hot path does one dict lookup per metric instead of prometheus_client's locked label lookup.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from domain.outcome import Method, RequestRecord

NO_MODEL = "none"
OTHER_SUBJECTS = "other"
DEFAULT_MAX_SUBJECTS = 100

# Outcome codes that mean the model behind the proxy failed rather than the caller.
_UPSTREAM_ERRORS = frozenset({"UPSTREAM_ERROR", "MODEL_UNAVAILABLE"})
_TIMEOUT = "TIMEOUT"
_CANCELLED = "CANCELLED"

# From a cached echo (sub-millisecond) to the default five-minute request timeout.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip


class PrometheusObserver:
    """Implements application.ports.RequestObserver with prometheus_client metrics."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_subjects: int = DEFAULT_MAX_SUBJECTS,
    ) -> None:
        # A private registry per observer: two servers in one process (tests) never collide.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._max_subjects = max_subjects
        self._subjects: set[str] = set()
        self._children: dict[tuple[Any, ...], Any] = {}
        reg = self.registry
        self._requests = Counter(
            "llm_proxy_requests",
            "Finished requests by method, served model and outcome code.",
            ("method", "model", "outcome"),
            registry=reg,
        )
        self._duration = Histogram(
            "llm_proxy_request_duration_seconds",
            "Time from a request's arrival at the use case to its last byte.",
            ("method", "model"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._first_chunk = Histogram(
            "llm_proxy_time_to_first_chunk_seconds",
            "Streams: time from arrival to the first text chunk.",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._tokens = Counter(
            "llm_proxy_tokens",
            "Tokens the models reported, by direction (input or output).",
            ("model", "subject", "direction"),
            registry=reg,
        )
        self._cost = Counter(
            "llm_proxy_cost_usd",
            "Cost in US dollars at the configured prices.",
            ("model", "subject"),
            registry=reg,
        )
        self._in_flight = Gauge(
            "llm_proxy_in_flight_requests",
            "Requests being served; method=StreamExecute is the number of open streams.",
            ("method",),
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._upstream_errors = Counter(
            "llm_proxy_upstream_errors",
            "Requests that failed because of the model behind the proxy.",
            ("model", "code"),
            registry=reg,
        )
        self._timeouts = Counter(
            "llm_proxy_upstream_timeouts",
            "Requests stopped at limits.request_timeout_seconds.",
            ("model",),
            registry=reg,
        )
        self._cancellations = Counter(
            "llm_proxy_cancellations",
            "Requests the client cancelled or abandoned before they finished.",
            ("method",),
            registry=reg,
        )
        worker = Gauge(
            "llm_proxy_worker_up",
            "1 for each live server process; under --workers the pid label tells them apart.",
            registry=reg,
            multiprocess_mode="liveall",
        )
        worker.set(1)
        # Start every method at zero so that dashboards see the series before the first call.
        for method in Method:
            self._in_flight.labels(method.value)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def subject_label(self, subject: str) -> str:
        if subject in self._subjects:
            return subject
        if len(self._subjects) < self._max_subjects:
            self._subjects.add(subject)
            return subject
        return OTHER_SUBJECTS

    def request_started(self, method: Method) -> None:
        self._child(self._in_flight, method.value).inc()

    def request_finished(self, record: RequestRecord) -> None:
        method = record.method.value
        model = record.model_id or NO_MODEL
        outcome = record.outcome
        self._child(self._in_flight, method).dec()
        self._child(self._requests, method, model, outcome).inc()
        self._child(self._duration, method, model).observe(record.duration_s)
        if record.first_chunk_s is not None:
            self._child(self._first_chunk, model).observe(record.first_chunk_s)
        if outcome != "ok":
            self._count_failure(method, model, outcome)
        usage = record.usage
        if usage.input_tokens or usage.output_tokens or record.cost_usd:
            subject = self.subject_label(record.subject)
            if usage.input_tokens:
                self._child(self._tokens, model, subject, "input").inc(usage.input_tokens)
            if usage.output_tokens:
                self._child(self._tokens, model, subject, "output").inc(usage.output_tokens)
            if record.cost_usd:
                self._child(self._cost, model, subject).inc(record.cost_usd)

    def _count_failure(self, method: str, model: str, outcome: str) -> None:
        if outcome == _CANCELLED:
            self._child(self._cancellations, method).inc()
        elif outcome == _TIMEOUT:
            self._child(self._timeouts, model).inc()
        elif outcome in _UPSTREAM_ERRORS:
            self._child(self._upstream_errors, model, outcome).inc()


def multiprocess_dir() -> str | None:
    """The directory worker processes share their metric values through, if any."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
