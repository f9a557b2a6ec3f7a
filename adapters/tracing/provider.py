"""The tracer provider and the application's Tracer port on top of it."""

from __future__ import annotations

from contextlib import AbstractContextManager

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

INSTRUMENTATION_NAME = "llm_proxy"
EXPORTERS = ("otlp", "console", "none")


class TracingSetupError(RuntimeError):
    """Tracing is enabled but cannot work as configured; the message says how to fix it."""


def _otlp_exporter(endpoint: str | None) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise TracingSetupError(
            "tracing.exporter is otlp but the OTLP exporter is not installed: "
            "pip install opentelemetry-exporter-otlp-proto-grpc, or set tracing.exporter "
            "to console or none"
        ) from exc
    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    return exporter


def build_provider(
    *,
    service_name: str,
    exporter: str,
    sample_ratio: float = 1.0,
    otlp_endpoint: str | None = None,
    processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """A provider private to this server; `processors` lets tests add an in-memory exporter.

    Incoming sampled traces stay sampled (parent-based); new traces start at `sample_ratio`.
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(otlp_endpoint)))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


class OtelTracer:
    """Implements application.ports.Tracer: each span becomes the current one while open."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer(INSTRUMENTATION_NAME)

    def span(self, name: str) -> AbstractContextManager[trace.Span]:
        return self._tracer.start_as_current_span(name)
