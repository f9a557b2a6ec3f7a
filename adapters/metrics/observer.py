"""Request metrics with bounded label sets.

Every label value comes from a closed set: methods, transports and outcome codes are fixed by
the code,
model ids are the *resolved* served ids (a name a client made up never resolves, so it is
counted under model="none"), and subjects are capped.
"""

from __future__ import annotations

from collections.abc import Sequence
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


# in-flight, requests, duration, first chunk, and the failure counter (None when ok).
_OutcomeChildren = tuple[Any, Any, Any, Any, Any]
_CallerChildren = tuple[Any, Any, Any]


class PrometheusObserver:
    """Implements application.ports.RequestObserver with prometheus_client metrics."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_subjects: int = DEFAULT_MAX_SUBJECTS,
        transports: Sequence[str] = (),
    ) -> None:
        # A private registry per observer: two servers in one process (tests) never collide.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._max_subjects = max_subjects
        self._subjects: set[str] = set()
        reg = self.registry
        self._requests = Counter(
            "llm_proxy_requests",
            "Finished requests by method (unary or stream), transport, served model and outcome.",
            ("method", "transport", "model", "outcome"),
            registry=reg,
        )
        self._duration = Histogram(
            "llm_proxy_request_duration_seconds",
            "Time from a request's arrival at the use case to its last byte.",
            ("method", "transport", "model"),
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
            "Requests being served; method=stream is the number of open streams.",
            ("method", "transport"),
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
            ("method", "transport"),
            registry=reg,
        )
        self._refused = Counter(
            "llm_proxy_refused_calls",
            "Calls refused before reaching the service, by reason (unauthenticated, "
            "malformed_request); a flood of them shows here, not line by line in the log.",
            ("reason",),
            registry=reg,
        )
        self._ledger_dropped = Counter(
            "llm_proxy_ledger_rows_dropped",
            "Usage ledger rows that could not be stored (queue full, or writes kept failing).",
            registry=reg,
        )
        self._limits_fail_open = Counter(
            "llm_proxy_limits_unchecked",
            "Requests admitted without checking limits: their store was unreachable and "
            "quotas.on_store_error is fail_open.",
            registry=reg,
        )
        worker = Gauge(
            "llm_proxy_worker_up",
            "1 for each live server process; under --workers the pid label tells them apart.",
            registry=reg,
            multiprocess_mode="liveall",
        )
        worker.set(1)
        # Label children fetched once per label combination (all bounded, see the module doc):
        # the hot path then does one dict lookup instead of a locked lookup per metric.
        self._started: dict[tuple[Method, str], Any] = {}
        self._by_outcome: dict[tuple[Method, str, str | None, str], _OutcomeChildren] = {}
        for transport in transports:
            self.declare_transport(transport)
        self._by_caller: dict[tuple[str, str], _CallerChildren] = {}

    def limits_fail_open(self) -> None:
        self._limits_fail_open.inc()

    def ledger_rows_dropped(self, count: int) -> None:
        self._ledger_dropped.inc(count)

    def subject_label(self, subject: str) -> str:
        if subject in self._subjects:
            return subject
        if len(self._subjects) < self._max_subjects:
            self._subjects.add(subject)
            return subject
        return OTHER_SUBJECTS

    def declare_transport(self, transport: str) -> None:
        """Every method of `transport` starts at zero, so dashboards see the series before the
        first call."""
        for method in Method:
            self._in_flight_child(method, transport)

    def _in_flight_child(self, method: Method, transport: str) -> Any:
        child = self._started.get((method, transport))
        if child is None:
            child = self._started[(method, transport)] = self._in_flight.labels(
                method.value, transport
            )
        return child

    def call_refused(self, reason: str, peer: str, detail: str) -> None:
        # reason comes from a fixed set in the transport; peer and detail are not labels.
        self._refused.labels(reason).inc()

    def request_started(self, method: Method, transport: str) -> None:
        self._in_flight_child(method, transport).inc()

    def request_finished(self, record: RequestRecord) -> None:
        key = (record.method, record.transport, record.model_id, record.outcome)
        children = self._by_outcome.get(key)
        if children is None:
            children = self._by_outcome[key] = self._outcome_children(*key)
        in_flight, requests, duration, first_chunk, failure = children
        in_flight.dec()
        requests.inc()
        duration.observe(record.duration_s)
        if first_chunk is not None and record.first_chunk_s is not None:
            first_chunk.observe(record.first_chunk_s)
        if failure is not None:
            failure.inc()
        usage = record.usage
        if usage.input_tokens or usage.output_tokens or record.cost_usd:
            self._count_usage(record)

    def _count_usage(self, record: RequestRecord) -> None:
        model = record.model_id or NO_MODEL
        key = (model, record.subject)
        children = self._by_caller.get(key)
        # Rebuilt once if a price appears for the model (a reload), to add its cost series.
        if children is None or (children[2] is None and record.cost_usd is not None):
            subject = self.subject_label(record.subject)
            children = (
                self._tokens.labels(model, subject, "input"),
                self._tokens.labels(model, subject, "output"),
                # Unpriced models get no cost series rather than one stuck at zero.
                self._cost.labels(model, subject) if record.cost_usd is not None else None,
            )
            # Past the cap, "other" subjects share children without growing this cache.
            if subject != OTHER_SUBJECTS:
                self._by_caller[key] = children
        tokens_in, tokens_out, cost = children
        usage = record.usage
        if usage.input_tokens:
            tokens_in.inc(usage.input_tokens)
        if usage.output_tokens:
            tokens_out.inc(usage.output_tokens)
        if record.cost_usd and cost is not None:
            cost.inc(record.cost_usd)

    def _outcome_children(
        self, method: Method, transport: str, model_id: str | None, outcome: str
    ) -> _OutcomeChildren:
        model = model_id or NO_MODEL
        failure: Any = None
        if outcome == _CANCELLED:
            failure = self._cancellations.labels(method.value, transport)
        elif outcome == _TIMEOUT:
            failure = self._timeouts.labels(model)
        elif outcome in _UPSTREAM_ERRORS:
            failure = self._upstream_errors.labels(model, outcome)
        return (
            self._in_flight_child(method, transport),
            self._requests.labels(method.value, transport, model, outcome),
            self._duration.labels(method.value, transport, model),
            # Only streams have a first chunk; no empty histogram for the other methods.
            self._first_chunk.labels(model) if method is Method.STREAM else None,
            failure,
        )
