"""`serve`: run the proxy in the foreground."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from adapters.llm import ModelConfigError
from infrastructure.cli.common import CONFIG_EXIT_STATUS, config_option, load_or_exit
from infrastructure.config import load_settings
from infrastructure.log import configure_logging
from infrastructure.observability import SINGLE, WORKER
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
# Set by the supervisor on the processes it starts; not for people.
@click.option("--worker", "worker_index", type=int, hidden=True)
def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
    http_port: int | None,
    log_level: str | None,
    workers: str | None,
    worker_index: int | None,
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
    is_worker = worker_index is not None
    configure_logging(
        settings.logging.level,
        settings.logging.format,
        show_pid=is_worker or settings.server.workers > 1,
    )
    if not is_worker and settings.server.workers > 1:
        try:
            status = supervise(settings, _worker_command(config, host, log_level))
        except OSError as exc:
            _fail(str(exc))
        sys.exit(status)
    container = build_container(
        settings,
        loader=lambda: load_settings(config, overrides=overrides),
        config_path=config,
        role=WORKER if is_worker else SINGLE,
    )
    try:
        # Under --workers the first worker speaks for all: one notice, one development token.
        asyncio.run(serve_until_signalled(container, announce=worker_index in (None, 0)))
    except ModelConfigError as exc:
        # The models section names something llm cannot serve here: fix the file, like any
        # other configuration error (a reload reports it the same way and keeps serving).
        click.echo(f"llm-proxy: {exc}", err=True)
        sys.exit(CONFIG_EXIT_STATUS)
    except (OSError, SecurityError) as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    # One line, as every other start-up error: the message already says what to do.
    click.echo(f"llm-proxy: {message}", err=True)
    sys.exit(1)


def _worker_command(config: Path | None, host: str | None, log_level: str | None) -> Any:
    def command(index: int, port: int, http_port: int | None) -> Sequence[str]:
        argv = [sys.executable, "-m", "infrastructure.cli", "serve", "--worker", str(index)]
        argv += ["--port", str(port)]
        if http_port is not None:
            argv += ["--http-port", str(http_port)]
        if config is not None:
            argv += ["--config", str(config)]
        if host is not None:
            argv += ["--host", host]
        if log_level is not None:
            argv += ["--log-level", log_level]
        return argv

    return command
