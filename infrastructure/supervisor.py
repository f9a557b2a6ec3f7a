"""`serve --workers N`: N server processes sharing one port, supervised by this one.

One Python process serves on one core. The supervisor imports everything the configuration
uses and loads the model catalog once, moves that heap out of the garbage collector's reach
(gc.freeze) and forks the workers from it: they share those pages copy-on-write instead of each
building its own. gRPC survives a fork only if its core has not started in the parent; importing
grpc does not start it, creating a channel or server does, so the supervisor never creates one:
every worker creates its own server and event loop after the fork. Each worker binds the same
address with SO_REUSEPORT and the kernel spreads connections across them. The supervisor
forwards SIGTERM/SIGINT/SIGHUP, restarts a worker that dies (backing off while it keeps dying)
and serves /metrics for all of them from prometheus_client's multiprocess directory, so a
scrape sees one process-independent total.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, Protocol

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
_FORWARDED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


class Workers(Protocol):
    def preload(self) -> None:
        """In the supervisor, before any fork: import and load what every worker needs."""

    def run(self, index: int, port: int, http_port: int | None, *, restarted: bool) -> int:
        """In a forked worker: serve until signalled; the exit status. `restarted`: a worker
        that replaces one that died, which reads the configuration as it is now."""


class WorkerProcess:
    """A forked worker. Its exit is awaited through a pidfd, which becomes readable when the
    process ends, so no thread waits for it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def send_signal(self, signum: int) -> None:
        # Once reaped, the pid may belong to another process.
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        if self.returncode is None:
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:
                # A kernel before 5.3: a thread waits instead.
                _, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
            else:
                status = await _exit_through(pidfd, self.pid)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


async def _exit_through(pidfd: int, pid: int) -> int:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    # The pidfd is readable once the process has ended, so this reaps it without blocking.
    reaped, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
    if reaped == 0:
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    return status


@dataclass
class _Slot:
    index: int
    process: WorkerProcess | None = None
    failures: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        workers: Workers,
        *,
        count: int,
        port: int,
        metrics_dir: str | None,
        quota_socket: str | None = None,
        http_port: int | None = None,
        private: Sequence[socket.socket] = (),
    ) -> None:
        """`private`: sockets only this process uses (port reservations, /metrics), which a
        forked worker closes so that they are not kept open by a worker that outlives it."""
        self._settings = settings
        self._workers = workers
        self._private = tuple(private)
        self._quota_socket = quota_socket
        self._port = port
        self._http_port = http_port
        self._metrics_dir = metrics_dir
        self._slots = [_Slot(index) for index in range(count)]
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

    def _fork(self, slot: _Slot) -> WorkerProcess:
        restarted = bool(slot.pids)
        # Nothing buffered before the fork may be written twice, once by each process.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        # Until the worker has replaced them, this process's signal handlers are the worker's
        # too, and they wake this process's event loop: signals wait until then.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        try:
            pid = os.fork()
            if pid == 0:
                for sock in self._private:
                    with contextlib.suppress(OSError):
                        sock.close()
                _become_worker(self._workers, slot.index, self._port, self._http_port, restarted)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return WorkerProcess(pid)

    async def _keep_running(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            process = self._fork(slot)
            slot.process = process
            slot.pids.append(process.pid)
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

    async def _wait(self, process: WorkerProcess) -> int:
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


def _become_worker(
    workers: Workers, index: int, port: int, http_port: int | None, restarted: bool
) -> NoReturn:
    """The forked child: leaves the supervisor's event loop and signal handlers behind, serves,
    and exits without ever returning into the supervisor's code."""
    status = 1
    try:
        # The supervisor's loop must not be touched from here: its epoll instance is shared
        # with the supervisor. The worker makes its own loop.
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop(None)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # Until the server installs its own handler, a SIGHUP (a reload) must not kill it.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        status = workers.run(index, port, http_port, restarted=restarted)
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        # os._exit skips atexit and the interpreter's teardown, so flush what logging holds.
        with contextlib.suppress(BaseException):
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
        os._exit(status)


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


def supervise(settings: Settings, workers: Workers) -> int:
    """Run `settings.server.workers` workers until signalled; the exit status to use."""
    server = settings.server
    reserved = reserve_port(server.host, server.port)
    port = reserved.getsockname()[1]
    # The HTTP port is shared by the workers the same way, and resolved here when it is 0.
    http_reserved = (
        reserve_port(settings.http.host, settings.http.port, flag="--http-port")
        if settings.http.enabled
        else None
    )
    http_port = http_reserved.getsockname()[1] if http_reserved is not None else None
    metrics_dir: str | None = None
    endpoint = None
    quota_dir: str | None = None
    try:
        if settings.metrics.enabled:
            metrics_dir = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
            # Before prometheus_client is imported: it picks its value store then, and the
            # workers inherit that choice.
            os.environ[MULTIPROC_ENV] = metrics_dir
        quota_socket: str | None = None
        if settings.quotas.store == "memory":
            # mkdtemp makes the directory 0700: only this user's processes reach the socket.
            quota_dir = tempfile.mkdtemp(prefix="llm-proxy-quotas-")
            quota_socket = os.path.join(quota_dir, "quotas.sock")
            os.environ[QUOTA_SOCKET_ENV] = quota_socket
        workers.preload()
        # Whatever the workers inherit stays out of their collections, so a collection never
        # writes to (and so copies) a page they share.
        gc.freeze()
        if metrics_dir is not None:
            from adapters.metrics import start_endpoint

            endpoint = start_endpoint(
                settings.metrics.host, settings.metrics.port, multiprocess_dir=metrics_dir
            )
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, endpoint.port)
        log.info(
            "supervising %d workers on %s:%d (pid %d)",
            server.workers,
            server.host,
            port,
            os.getpid(),
        )
        if http_port is not None:
            log.info("OpenAI-compatible HTTP API on http://%s:%d/v1", settings.http.host, http_port)
        supervisor = Supervisor(
            settings,
            workers,
            count=server.workers,
            port=port,
            metrics_dir=metrics_dir,
            quota_socket=quota_socket,
            http_port=http_port,
            private=[
                sock
                for sock in (
                    reserved,
                    http_reserved,
                    endpoint.server.socket if endpoint is not None else None,
                )
                if sock is not None
            ],
        )
        status = asyncio.run(supervisor.run())
        log.info("all workers stopped")
        return status
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
