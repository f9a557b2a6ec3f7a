"""Options and helpers shared by commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from infrastructure.config import ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

# The same status click uses for usage errors: both mean "fix how you started me".
CONFIG_EXIT_STATUS = 2


def config_option(command: F) -> F:
    return click.option(
        "--config",
        "-c",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="LLM_PROXY_CONFIG",
        help="YAML configuration file (also LLM_PROXY_CONFIG).",
    )(command)


def load_or_exit(config: Path | None, overrides: Mapping[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        click.echo(f"llm-proxy: {exc}", err=True)
        sys.exit(CONFIG_EXIT_STATUS)
