"""`serve --workers N`: N server processes sharing one port, supervised by this one.

grpc cannot fork, and one Python process serves on one core, so the workers are fresh
interpreters running `serve --worker I`. Each binds the same address with SO_REUSEPORT and the
kernel spreads connections across them. The supervisor forwards SIGTERM/SIGINT/SIGHUP, restarts
a worker that dies (backing off while it keeps dying) and serves /metrics for all of them from
prometheus_client's multiprocess directory, so a scrape sees one process-independent total.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from infrastructure.config.settings import Settings
from infrastructure.ports import reserve_port

if TYPE_CHECKING:
    from adapters.quota.shared import QuotaServer

log = logging.getLogger("llm_proxy.supervisor")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Where the workers find the quota counters this supervisor keeps (quotas.store: memory).
QUOTA_SOCKET_ENV = "LLM_PROXY_QUOTA_SOCKET"
# A worker exiting with the configuration-error status will only fail again: give up.
CONFIG_EXIT_STATUS = 2
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# A worker that ran this long before dying is restarted without any backoff left over.
STABLE_AFTER_S = 30.0
# Beyond the workers' own grace period, how long to wait before killing them.
KILL_MARGIN_S = 10.0

# (worker index, gRPC port, HTTP port or None) -> argv
WorkerCommand = Callable[[int, int, int | None], Sequence[str]]


@dataclass
class _Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    failures: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        command: WorkerCommand,
        *,
        workers: int,
        port: int,
        env: dict[str, str],
        metrics_dir: str | None,
        quota_socket: str | None = None,
        http_port: int | None = None,
    ) -> None:
        self._settings = settings
        self._quota_socket = quota_socket
        self._command = command
        self._port = port
        self._http_port = http_port
        self._env = env
        self._metrics_dir = metrics_dir
        self._slots = [_Slot(index) for index in range(workers)]
        self._stopping = asyncio.Event()
        self._exit_status = 0

    def _signal_all(self, signum: int) -> None:
        for slot in self._slots:
            process = slot.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    def _on_stop(self, signum: int) -> None:
        if not self._stopping.is_set():
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self._slots))
        # A second signal is forwarded too: the workers then cancel what is still in flight.
        self._stopping.set()
        self._signal_all(signum)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._signal_all, signal.SIGHUP)
        quotas = None
        if self._quota_socket is not None:
            from adapters.quota.shared import QuotaServer

            # Before any worker starts: the workers' first requests already need it.
            quotas = QuotaServer()
            await _rebuild(quotas, self._settings)
            await quotas.start(self._quota_socket)
        try:
            await asyncio.gather(*(self._keep_running(slot) for slot in self._slots))
        finally:
            if quotas is not None:
                await quotas.stop()
        return self._exit_status

    async def _keep_running(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            process = await asyncio.create_subprocess_exec(
                *self._command(slot.index, self._port, self._http_port), env=self._env
            )
            slot.process = process
            slot.pids.append(process.pid)
            if self._stopping.is_set():
                # The stop signal was forwarded while this worker was being started.
                process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            log.info("worker %d started: pid %d", slot.index, process.pid)
            status = await self._wait(process)
            ran_s = time.monotonic() - started
            if self._metrics_dir is not None:
                from adapters.metrics import mark_worker_dead

                mark_worker_dead(self._metrics_dir, process.pid)
            if self._stopping.is_set():
                # Never hide the reason for stopping (say, a configuration error) behind the
                # status of a worker that was stopped because of it.
                if status != 0 and self._exit_status == 0:
                    self._exit_status = 1
                return
            if status == CONFIG_EXIT_STATUS and ran_s < STABLE_AFTER_S:
                log.error("worker %d cannot start with this configuration; stopping", slot.index)
                self._exit_status = CONFIG_EXIT_STATUS
                self._on_stop(signal.SIGTERM)
                return
            slot.failures = 0 if ran_s >= STABLE_AFTER_S else slot.failures + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(slot.failures - 1, 0))
            log.warning(
                "worker %d (pid %d) exited with status %s after %.1fs; restarting in %.1fs",
                slot.index,
                process.pid,
                status,
                ran_s,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _wait(self, process: asyncio.subprocess.Process) -> int:
        waiting = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait((waiting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            limit = self._settings.server.grace_period_seconds
            limit += self._settings.server.shutdown_delay_seconds + KILL_MARGIN_S
            try:
                await asyncio.wait_for(asyncio.shield(waiting), limit)
            except TimeoutError:
                log.error("worker pid %d did not stop in %.0fs; killing it", process.pid, limit)
                process.kill()
        return await waiting


async def _rebuild(quotas: QuotaServer, settings: Settings) -> None:
    from infrastructure.ledger import build_sink
    from infrastructure.quotas import rebuild_from_ledger
    from infrastructure.runtime import quota_policy_from

    sink = build_sink(settings.ledger)
    if sink is None:
        return
    try:
        await sink.open()
    except OSError as exc:
        log.error("could not open the usage ledger to rebuild budgets: %s", exc)
        return
    try:
        await rebuild_from_ledger(quotas.store, sink, quota_policy_from(settings.quotas))
    finally:
        await sink.close()


def supervise(settings: Settings, command: WorkerCommand) -> int:
    """Run `settings.server.workers` workers until signalled; the exit status to use."""
    server = settings.server
    reserved = reserve_port(server.host, server.port)
    port = reserved.getsockname()[1]
    # The HTTP port is shared by the workers the same way, and resolved here when it is 0.
    http_reserved = (
        reserve_port(settings.http.host, settings.http.port) if settings.http.enabled else None
    )
    http_port = http_reserved.getsockname()[1] if http_reserved is not None else None
    env = dict(os.environ)
    metrics_dir: str | None = None
    endpoint = None
    if settings.metrics.enabled:
        metrics_dir = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
        env[MULTIPROC_ENV] = metrics_dir
        from adapters.metrics import start_endpoint

        endpoint = start_endpoint(
            settings.metrics.host, settings.metrics.port, multiprocess_dir=metrics_dir
        )
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, endpoint.port)
    quota_dir: str | None = None
    quota_socket: str | None = None
    if settings.quotas.store == "memory":
        # mkdtemp makes the directory 0700: only this user's processes reach the socket.
        quota_dir = tempfile.mkdtemp(prefix="llm-proxy-quotas-")
        quota_socket = os.path.join(quota_dir, "quotas.sock")
        env[QUOTA_SOCKET_ENV] = quota_socket
    log.info(
        "supervising %d workers on %s:%d (pid %d)", server.workers, server.host, port, os.getpid()
    )
    if http_port is not None:
        log.info("OpenAI-compatible HTTP API on http://%s:%d/v1", settings.http.host, http_port)
    supervisor = Supervisor(
        settings,
        command,
        workers=server.workers,
        port=port,
        env=env,
        metrics_dir=metrics_dir,
        quota_socket=quota_socket,
        http_port=http_port,
    )
    try:
        return asyncio.run(supervisor.run())
    finally:
        reserved.close()
        if http_reserved is not None:
            http_reserved.close()
        if endpoint is not None:
            endpoint.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if quota_dir is not None:
            shutil.rmtree(quota_dir, ignore_errors=True)
        log.info("all workers stopped")
