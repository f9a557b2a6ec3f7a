"""The /metrics HTTP endpoint, for one process or for every worker of a supervisor."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import multiprocess as prom_multiprocess


@dataclass
class MetricsEndpoint:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_endpoint(
    host: str, port: int, *, registry: CollectorRegistry | None = None, multiprocess_dir: str | None
) -> MetricsEndpoint:
    """Serve `registry`, or, given `multiprocess_dir`, the sum of every worker's metrics."""
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    if registry is None:
        raise ValueError("start_endpoint needs a registry or a multiprocess directory")
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsEndpoint(server, thread)


def mark_worker_dead(multiprocess_dir: str, pid: int) -> None:
    """Drop a dead worker's live gauges (in-flight, worker_up); its counters stay summed."""
    prom_multiprocess.mark_process_dead(pid, multiprocess_dir)  # type: ignore[no-untyped-call]
