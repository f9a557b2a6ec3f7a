"""The /metrics HTTP endpoint, for one process or for every worker of a supervisor."""

from __future__ import annotations

import contextlib
import glob
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.metrics_core import Metric

# A worker's value file starts with an 8-byte header (bytes used, padding).
_HEADER_BYTES = 8


class _WorkerFilesCollector(prom_multiprocess.MultiProcessCollector):
    """The stock collector, minus the files their worker has not sized yet.

    prometheus_client creates a value file with open() and only then grows it to its mmap size,
    so a scrape in between (a worker starting, or creating its first value of a new type) finds
    an empty file, and the stock collector fails the whole scrape with HTTP 500. An empty file
    holds no values: leaving it out of this scrape loses nothing."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path=path)  # type: ignore[no-untyped-call]
        self._dir = path

    def collect(self) -> Iterable[Metric]:
        files = [f for f in glob.glob(os.path.join(self._dir, "*.db")) if _sized(f)]
        merged: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


def _sized(path: str) -> bool:
    try:
        return os.stat(path).st_size >= _HEADER_BYTES
    except FileNotFoundError:
        # A dead worker's live gauges, removed since the glob.
        return False


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
        _WorkerFilesCollector(registry, multiprocess_dir)
    if registry is None:
        raise ValueError("start_endpoint needs a registry or a multiprocess directory")
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsEndpoint(server, thread)


def mark_worker_dead(multiprocess_dir: str, pid: int) -> None:
    """Drop a dead worker's live gauges (in-flight, worker_up); its counters stay summed.

    A worker killed between creating a value file and sizing it leaves it empty for good;
    it holds nothing, so it goes too rather than being skipped at every scrape."""
    prom_multiprocess.mark_process_dead(pid, multiprocess_dir)  # type: ignore[no-untyped-call]
    for path in glob.glob(os.path.join(multiprocess_dir, f"*_{pid}.db")):
        if not _sized(path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
