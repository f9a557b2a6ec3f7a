"""`serve`: run the proxy in the foreground."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from infrastructure.cli.common import config_option, load_or_exit
from infrastructure.log import configure_logging
from infrastructure.security import SecurityError
from infrastructure.server_runner import build_container, serve_until_signalled


@click.command()
@config_option
@click.option("--host", help="Address to listen on (server.host). Default 127.0.0.1.")
@click.option("--port", type=int, help="TCP port (server.port). Default 50051; 0 picks one.")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (logging.level).",
)
def serve(config: Path | None, host: str | None, port: int | None, log_level: str | None) -> None:
    """Start the gRPC server and serve until SIGINT or SIGTERM.

    On a signal it stops accepting calls, lets in-flight calls finish within
    server.grace_period_seconds, then exits 0.
    """
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides.setdefault("server", {})["host"] = host
    if port is not None:
        overrides.setdefault("server", {})["port"] = port
    if log_level is not None:
        overrides.setdefault("logging", {})["level"] = log_level
    settings = load_or_exit(config, overrides)
    configure_logging(settings.logging.level, settings.logging.format)
    container = build_container(settings)
    try:
        asyncio.run(serve_until_signalled(container))
    except (OSError, SecurityError) as exc:
        raise click.ClickException(str(exc)) from exc
