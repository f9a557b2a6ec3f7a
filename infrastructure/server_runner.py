"""Running the proxy: load models, bind, serve until told to stop, drain, exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass

import grpc

from infrastructure import security
from infrastructure.config.settings import Settings
from infrastructure.container import Container

log = logging.getLogger("llm_proxy.server")


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)


def build_container(settings: Settings) -> Container:
    container = Container()
    container.settings.override(settings)
    return container


async def start(
    container: Container, host: str | None = None, port: int | None = None
) -> RunningServer:
    """Load the model catalog, then bind and start; returns the bound port (port 0 → any free)."""
    settings: Settings = container.settings()
    container.catalog().load()
    server: grpc.aio.Server = container.grpc_server()
    address = f"{host or settings.server.host}:{settings.server.port if port is None else port}"
    security.check_exposure(settings, host or settings.server.host)
    credentials = container.tls().credentials
    try:
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    await server.start()
    catalog = container.catalog().current()
    log.info(
        "listening on %s:%d serving %d models (default %s)",
        host or settings.server.host,
        bound,
        len(catalog.models),
        catalog.default_model or "none",
    )
    notice = security.startup_notice(
        settings, container.token_verifier(), host or settings.server.host, bound
    )
    if notice is not None:
        # The terminal, not the log: the notice holds a (short-lived) token.
        sys.stdout.write(notice)
        sys.stdout.flush()
    return RunningServer(server, bound)


async def serve_until_signalled(container: Container) -> None:
    settings: Settings = container.settings()
    running = await start(container)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    grace = settings.server.grace_period_seconds
    log.info("shutting down: draining in-flight calls for up to %.1fs", grace)
    await running.stop(grace)
    container.gateway().close()
    log.info("stopped")
