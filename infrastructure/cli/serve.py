"""`serve`: run the proxy in the foreground."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from adapters.llm import ModelConfigError
from infrastructure.cli.common import CONFIG_EXIT_STATUS, config_option, load_or_exit
from infrastructure.config import ConfigError, Settings, load_settings
from infrastructure.config.loader import deep_merge
from infrastructure.container import Container
from infrastructure.log import configure_logging
from infrastructure.observability import SINGLE, WORKER
from infrastructure.preload import import_configured
from infrastructure.security import SecurityError
from infrastructure.server_runner import build_container, serve_until_signalled
from infrastructure.supervisor import supervise


@click.command()
@config_option
@click.option("--host", help="Address to listen on (server.host). Default 127.0.0.1.")
@click.option("--port", type=int, help="TCP port (server.port). Default 50051; 0 picks one.")
@click.option(
    "--http-port",
    type=int,
    help="TCP port of the OpenAI-compatible HTTP API (http.port). Default 8080; 0 picks one.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (logging.level).",
)
@click.option(
    "--workers",
    help="Server processes sharing the port (server.workers): a number, or auto for one per CPU.",
)
def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
    http_port: int | None,
    log_level: str | None,
    workers: str | None,
) -> None:
    """Start the gRPC server and serve until SIGINT or SIGTERM.

    On a signal it reports NOT_SERVING on the health service, stops accepting calls, lets
    in-flight calls finish within server.grace_period_seconds, then exits 0. SIGHUP re-reads
    the configuration and applies what can change without a restart.
    """
    # Until the server installs its own handler, a SIGHUP (a reload) must not kill it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides.setdefault("server", {})["host"] = host
    if port is not None:
        overrides.setdefault("server", {})["port"] = port
    if http_port is not None:
        overrides.setdefault("http", {})["port"] = http_port
    if log_level is not None:
        overrides.setdefault("logging", {})["level"] = log_level
    if workers is not None:
        overrides.setdefault("server", {})["workers"] = workers
    settings = load_or_exit(config, overrides)
    several = settings.server.workers > 1
    configure_logging(settings.logging.level, settings.logging.format, show_pid=several)
    if several:
        try:
            status = supervise(settings, ForkedWorkers(settings, config, overrides))
        except ModelConfigError as exc:
            click.echo(f"llm-proxy: {exc}", err=True)
            sys.exit(CONFIG_EXIT_STATUS)
        except OSError as exc:
            _fail(str(exc))
        sys.exit(status)
    container = build_container(
        settings,
        loader=lambda: load_settings(config, overrides=overrides),
        config_path=config,
        role=SINGLE,
    )
    sys.exit(run_server(container, announce=True))


def run_server(container: Container, *, announce: bool) -> int:
    """Serve until signalled; the exit status, with a failure to start told in one line."""
    try:
        asyncio.run(serve_until_signalled(container, announce=announce))
    except ModelConfigError as exc:
        # The models section names something llm cannot serve here: fix the file, like any
        # other configuration error (a reload reports it the same way and keeps serving).
        click.echo(f"llm-proxy: {exc}", err=True)
        return CONFIG_EXIT_STATUS
    except (OSError, SecurityError) as exc:
        # One line, as every other start-up error: the message already says what to do.
        click.echo(f"llm-proxy: {exc}", err=True)
        return 1
    return 0


def _fail(message: str) -> NoReturn:
    click.echo(f"llm-proxy: {message}", err=True)
    sys.exit(1)


class ForkedWorkers:
    """The workers of `serve --workers N`, forked from a supervisor that has imported their
    code and loaded their model catalog (infrastructure.supervisor)."""

    def __init__(self, settings: Settings, config: Path | None, overrides: dict[str, Any]):
        self._settings = settings
        self._config = config
        self._overrides = overrides
        self._template = self._container(settings, self._loader(settings))

    def _container(self, settings: Settings, loader: Callable[[], Settings]) -> Container:
        return build_container(settings, loader=loader, config_path=self._config, role=WORKER)

    def _loader(self, settings: Settings) -> Callable[[], Settings]:
        # A reload keeps the ports the supervisor gave the worker.
        ports: dict[str, Any] = {"server": {"port": settings.server.port}}
        if settings.http.enabled:
            ports["http"] = {"port": settings.http.port}
        overrides = deep_merge(self._overrides, ports)
        return lambda: load_settings(self._config, overrides=overrides)

    def preload(self) -> None:
        import_configured(self._settings)
        self._template.catalog().load()

    def run(self, index: int, port: int, http_port: int | None, *, restarted: bool) -> int:
        settings = _with_ports(self._settings, port, http_port)
        loader = self._loader(settings)
        if restarted:
            # A replacement serves the configuration as it is now, as a fresh process would.
            try:
                settings = loader()
            except ConfigError as exc:
                click.echo(f"llm-proxy: {exc}", err=True)
                return CONFIG_EXIT_STATUS
        if settings.models == self._settings.models:
            container = self._template
            container.settings.override(settings)
            container.settings_loader.override(loader)
        else:
            container = self._container(settings, loader)
        # The first worker speaks for all: one notice, one development token.
        return run_server(container, announce=index == 0)


def _with_ports(settings: Settings, port: int, http_port: int | None) -> Settings:
    http = settings.http
    if http_port is not None:
        http = dataclasses.replace(http, port=http_port)
    server = dataclasses.replace(settings.server, port=port)
    return dataclasses.replace(settings, server=server, http=http)
