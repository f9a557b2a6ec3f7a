"""OpenTelemetry tracing: spans for the transport, the use cases and the upstream model.

Importing this package imports opentelemetry, so the composition root imports it only when
tracing is enabled; with tracing off the process never loads opentelemetry at all.
"""

from adapters.tracing.gateway import TracedGateway
from adapters.tracing.interceptor import TracingInterceptor
from adapters.tracing.provider import OtelTracer, build_provider

__all__ = ["OtelTracer", "TracedGateway", "TracingInterceptor", "build_provider"]
