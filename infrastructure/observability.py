"""Composition of the optional observability adapters: each is built only when enabled.

Tracing in particular is imported lazily, so that a server with tracing off never loads
opentelemetry; the container calls these functions instead of naming the adapters itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from adapters.grpc.health import GrpcHealth
from application.ports import ModelGateway, RefusalObserver, RequestObserver, Tracer
from domain.outcome import Method, RequestRecord
from infrastructure.config.settings import (
    MetricsSettings,
    ServerSettings,
    Settings,
    TracingSettings,
)

if TYPE_CHECKING:
    from adapters.metrics import MetricsEndpoint, PrometheusObserver

SINGLE = "single"
WORKER = "worker"


class FanOutObserver:
    """Tells several observers about every request, in order."""

    def __init__(self, observers: Sequence[RequestObserver]) -> None:
        self._observers = tuple(observers)

    def request_started(self, method: Method, transport: str) -> None:
        for observer in self._observers:
            observer.request_started(method, transport)

    def request_finished(self, record: RequestRecord) -> None:
        for observer in self._observers:
            observer.request_finished(record)


class FanOutRefusals:
    """Tells the refusal log and, when enabled, the metrics about every refused call."""

    def __init__(self, observers: Sequence[RefusalObserver]) -> None:
        self._observers = tuple(observers)

    def call_refused(self, reason: str, peer: str, detail: str) -> None:
        for observer in self._observers:
            observer.call_refused(reason, peer, detail)


def compose_refusals(*observers: RefusalObserver | None) -> RefusalObserver:
    present = [observer for observer in observers if observer is not None]
    return present[0] if len(present) == 1 else FanOutRefusals(present)


def compose_observers(*observers: RequestObserver | None) -> RequestObserver:
    present = [observer for observer in observers if observer is not None]
    # One observer is called directly: no fan-out layer on the hot path when metrics are off.
    return present[0] if len(present) == 1 else FanOutObserver(present)


def build_health(settings: ServerSettings) -> GrpcHealth | None:
    return GrpcHealth() if settings.health else None


def build_metrics(settings: Settings) -> PrometheusObserver | None:
    if not settings.metrics.enabled:
        return None
    from adapters.metrics import PrometheusObserver

    # The transports this server runs; their in-flight series exist from the start.
    transports = ("grpc", "http") if settings.http.enabled else ("grpc",)
    return PrometheusObserver(max_subjects=settings.metrics.max_subjects, transports=transports)


def start_metrics_endpoint(
    settings: MetricsSettings, metrics: PrometheusObserver | None, role: str
) -> MetricsEndpoint | None:
    # A worker's metrics are served by its supervisor, summed over every worker.
    if metrics is None or role == WORKER:
        return None
    from adapters.metrics import start_endpoint

    return start_endpoint(
        settings.host, settings.port, registry=metrics.registry, multiprocess_dir=None
    )


def build_tracer_provider(settings: TracingSettings) -> Any:
    """An opentelemetry TracerProvider, or None when tracing is off (typed Any so that this
    module does not need opentelemetry to be importable)."""
    if not settings.enabled:
        return None
    from adapters.tracing import build_provider

    return build_provider(
        service_name=settings.service_name,
        exporter=settings.exporter,
        sample_ratio=settings.sample_ratio,
        otlp_endpoint=settings.otlp_endpoint,
    )


def use_case_tracer(provider: Any) -> Tracer | None:
    if provider is None:
        return None
    from adapters.tracing import OtelTracer

    return OtelTracer(provider)


def traced_gateway(gateway: ModelGateway, provider: Any) -> ModelGateway:
    if provider is None:
        return gateway
    from adapters.tracing import TracedGateway

    return TracedGateway(gateway, provider)


def tracing_interceptors(provider: Any) -> list[Any]:
    if provider is None:
        return []
    from adapters.tracing import TracingInterceptor

    return [TracingInterceptor(provider)]


def chain(*groups: Sequence[Any]) -> list[Any]:
    """Interceptor lists joined in order: the first runs outermost."""
    return [item for group in groups for item in group]


def shutdown_tracing(provider: Any) -> None:
    """Flush spans still queued for export."""
    if provider is not None:
        provider.shutdown()
