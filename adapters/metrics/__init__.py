"""Prometheus metrics: a RequestObserver that counts, and the HTTP endpoint that exposes them."""

from adapters.metrics.exposition import MetricsEndpoint, mark_worker_dead, start_endpoint
from adapters.metrics.observer import PrometheusObserver

__all__ = [
    "MetricsEndpoint",
    "PrometheusObserver",
    "mark_worker_dead",
    "start_endpoint",
]
