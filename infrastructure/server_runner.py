"""Running the proxy: load models, bind, serve until told to stop, drain, exit."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from adapters.grpc.health import GrpcHealth
from adapters.quota import MemoryQuotaStore
from infrastructure import security
from infrastructure.config.settings import Settings
from infrastructure.container import Container
from infrastructure.fd_limit import raise_open_file_limit
from infrastructure.http_api import build_http_listener
from infrastructure.listeners import GrpcListener, Listener, MetricsListener
from infrastructure.memory import AllocatorTrim
from infrastructure.observability import SINGLE, WORKER, shutdown_tracing
from infrastructure.ports import ensure_free
from infrastructure.quotas import rebuild_from_ledger, watch_store
from infrastructure.refusal_log import RefusalLog
from infrastructure.reload import FileWatcher, Reloader, SettingsLoader, watch

if TYPE_CHECKING:
    from adapters.http import HttpListener
    from adapters.ledger import BatchingLedger
    from adapters.metrics import MetricsEndpoint
    from application.admission import Admission
    from application.ports import QuotaStore

log = logging.getLogger("llm_proxy.server")


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: GrpcHealth | None = None
    metrics: MetricsEndpoint | None = None
    ledger: BatchingLedger | None = None
    admission: Admission | None = None
    quota_store: QuotaStore | None = None
    watchers: list[asyncio.Task[None]] = field(default_factory=list)
    http: HttpListener | None = None
    # Every transport's listener; /metrics, when on, comes last and stops last.
    listeners: list[Listener] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.listeners:
            self.listeners.append(GrpcListener(self.server, self.health))
            if self.http is not None:
                self.listeners.append(self.http)
            if self.metrics is not None:
                self.listeners.append(MetricsListener(self.metrics))

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics is not None else None

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    async def begin_shutdown(self) -> None:
        """Health and readiness report not serving from now on; calls are still accepted."""
        for listener in self.listeners:
            await listener.drain()

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to grace_s, cancel the rest."""
        await self.begin_shutdown()
        await self.stop_transports(grace_s)
        for watcher in self.watchers:
            watcher.cancel()
        if self.admission is not None:
            await self.admission.close()
        if self.quota_store is not None:
            await self.quota_store.close()
        if self.ledger is not None:
            # After the calls have ended, so that their rows are written too.
            await self.ledger.close()
        for each in self.listeners:
            if isinstance(each, MetricsListener):
                await each.stop(grace_s)

    async def stop_transports(self, grace_s: float) -> None:
        """Every transport's listener stops: in-flight calls get up to grace_s (0: none, also
        while an earlier, longer stop is still waiting)."""
        transports = [each for each in self.listeners if not isinstance(each, MetricsListener)]
        await asyncio.gather(*(each.stop(grace_s) for each in transports))


def build_container(
    settings: Settings,
    *,
    loader: SettingsLoader | None = None,
    config_path: Path | None = None,
    role: str = SINGLE,
) -> Container:
    """`loader` re-reads the configuration for a reload; `config_path` is watched for changes
    when server.reload_on_change is on; role is SINGLE or WORKER (under `--workers`)."""
    container = Container()
    container.settings.override(settings)
    container.settings_loader.override(loader)
    container.config_path.override(config_path)
    container.role.override(role)
    return container


async def start(
    container: Container,
    host: str | None = None,
    port: int | None = None,
    *,
    announce: bool = True,
    http_port: int | None = None,
) -> RunningServer:
    """Load the model catalog, then bind and start every listener; returns the bound ports
    (port 0 → any free).

    `announce`: tell the terminal how to call this server (one worker of several does)."""
    settings: Settings = container.settings()
    open_files = raise_open_file_limit()
    registry = container.catalog()
    if not registry.loaded:
        # Otherwise a worker of `serve --workers`, forked with the catalog its supervisor loaded.
        registry.load()
    server: grpc.aio.Server = container.grpc_server()
    address = f"{host or settings.server.host}:{settings.server.port if port is None else port}"
    security.check_exposure(settings, host or settings.server.host)
    credentials = container.tls().credentials
    if container.role() == SINGLE:
        # Workers share a port the supervisor has checked already.
        ensure_free(host or settings.server.host, settings.server.port if port is None else port)
    try:
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    ledger: BatchingLedger | None = container.ledger()
    quota_store: QuotaStore = container.quota_store()
    quotas = container.policy().current().quotas
    # Budgets kept here start from the ledger, before the first request; otherwise the
    # ledger opens once the server listens (rows queue meanwhile), so that opening it never
    # delays serving.
    rebuild = isinstance(quota_store, MemoryQuotaStore) and quotas.enabled
    if ledger is not None and isinstance(quota_store, MemoryQuotaStore) and rebuild:
        await ledger.start()
        await rebuild_from_ledger(quota_store, ledger, quotas)
    health: GrpcHealth | None = container.health()
    if health is not None:
        # The catalog is loaded: this process can answer prompts as soon as it listens.
        await health.serving()
    # Every other listener before gRPC accepts: a flood of gRPC connections that takes every
    # file descriptor must not leave the HTTP API or /metrics unable to bind.
    metrics: MetricsEndpoint | None = container.metrics_endpoint()
    http: HttpListener | None = None
    try:
        http = await _start_http(container, http_port)
        await server.start()
        if ledger is not None and not rebuild:
            await ledger.start()
    except BaseException:
        await server.stop(0)
        if http is not None:
            await http.stop(0)
        raise
    catalog = container.catalog().current()
    log.info(
        "listening on %s:%d serving %d models (default %s) pid %d, open-file limit %d",
        host or settings.server.host,
        bound,
        len(catalog.models),
        catalog.default_model or "none",
        os.getpid(),
        open_files,
    )
    if http is not None:
        log.info("OpenAI-compatible HTTP API on %s", _http_url(http))
    if metrics is not None:
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, metrics.port)
    notice = (
        security.startup_notice(
            settings,
            container.token_verifier(),
            host or settings.server.host,
            bound,
            http_url=_http_url(http),
        )
        if announce
        else None
    )
    if notice is not None:
        # The terminal, not the log: the notice is for whoever started the server.
        sys.stdout.write(notice)
        sys.stdout.flush()
    admission: Admission = container.admission()
    running = RunningServer(
        server, bound, health, metrics, ledger, admission, quota_store, http=http
    )
    if not isinstance(quota_store, MemoryQuotaStore):
        watching = watch_store(quota_store, admission, health, settings.quotas)
        running.watchers.append(asyncio.get_running_loop().create_task(watching))
    return running


async def _start_http(container: Container, port: int | None) -> HttpListener | None:
    settings: Settings = container.settings()
    http = settings.http
    if not http.enabled:
        return None
    security.check_exposure(settings, http.host)
    listener = build_http_listener(
        container.http_gate(),
        http.host,
        http.port if port is None else port,
        tls=container.http_tls().context,
        reuse_port=container.role() != SINGLE,
    )
    await listener.start()
    return listener


def _http_url(listener: HttpListener | None) -> str | None:
    if listener is None:
        return None
    return f"{listener.scheme}://{listener.host}:{listener.port}/v1"


async def serve_until_signalled(container: Container, *, announce: bool = True) -> None:
    """Serve; SIGHUP reloads the configuration; SIGTERM or SIGINT drains and returns, and a
    second one cancels whatever is still in flight at once."""
    settings: Settings = container.settings()
    config_path = container.config_path()
    # Stamped before serving, so that an edit made as soon as the server listens is noticed.
    watcher = (
        FileWatcher(config_path)
        if settings.server.reload_on_change and config_path is not None
        else None
    )
    reloader: Reloader = container.reloader()
    loop = asyncio.get_running_loop()
    background: set[asyncio.Task[Any]] = set()

    def spawn(work: Coroutine[Any, Any, Any]) -> None:
        task = loop.create_task(work)
        background.add(task)
        task.add_done_callback(background.discard)

    # Handlers first: a signal that arrives while the catalog loads must not kill the process.
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: spawn(reloader.reload_logged("SIGHUP")))
    # Before serving: the descriptor it reads memory through must not be one a client took.
    trim = AllocatorTrim()
    running = await start(container, announce=announce)
    # Everything is imported and the catalog loaded: the collector need not scan that heap
    # again at every full collection (nor, under --workers, write to pages shared with the
    # supervisor). What is garbage now stays, which is a few hundred objects, not worth the
    # tens of milliseconds a collection would add to start-up.
    gc.freeze()
    if watcher is not None:
        spawn(watch(watcher, settings.server.reload_check_seconds, reloader))
    if container.role() == WORKER:
        spawn(_stop_when_orphaned(stop))
    spawn(_summarise_refusals(container.refusal_log()))
    if trim.available:
        spawn(_trim_after_bursts(trim))
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in list(background):
            task.cancel()
        trim.close()
    hurry = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, hurry.set)
    await drain(running, reloader.current, hurry)
    container.gateway().close()
    container.refusal_log().flush()
    shutdown_tracing(container.tracer_provider())
    log.info("stopped")


async def _trim_after_bursts(trim: AllocatorTrim, interval_s: float = 15.0) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(trim.maybe_trim)
        except Exception:
            # Housekeeping: whatever went wrong must not stop the server or later trims.
            log.warning("returning freed memory to the system failed", exc_info=True)


async def _summarise_refusals(refusals: RefusalLog) -> None:
    # The summary of a flood that has stopped is written within an interval, not at the
    # next refusal.
    while True:
        await asyncio.sleep(refusals.interval_s)
        refusals.flush()


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    # A worker whose supervisor was killed outright must not keep the port to itself.
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing signals a parent's death
        await asyncio.sleep(1.0)
    log.warning("supervisor (pid %d) is gone; shutting down", parent)
    stop.set()


async def drain(running: RunningServer, settings: Settings, hurry: asyncio.Event) -> None:
    grace = settings.server.grace_period_seconds
    delay = settings.server.shutdown_delay_seconds
    await running.begin_shutdown()
    if delay > 0:
        log.info("shutting down: reporting NOT_SERVING for %.1fs before draining", delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hurry.wait(), delay)
    log.info("shutting down: draining in-flight calls for up to %.1fs", grace)
    stopping = asyncio.ensure_future(running.stop(0 if hurry.is_set() else grace))
    hurried = asyncio.ensure_future(hurry.wait())
    await asyncio.wait((stopping, hurried), return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    if not stopping.done():
        log.warning("second signal: cancelling the calls still in flight")
        await running.stop_transports(0)
    await stopping
