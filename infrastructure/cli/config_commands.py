"""`config show` and `config validate`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from infrastructure.cli.common import CONFIG_EXIT_STATUS, config_option, load_or_exit
from infrastructure.config import ConfigError, load_settings, to_plain


@click.group("config")
def config_group() -> None:
    """Inspect and check configuration."""


@config_group.command("show")
@config_option
def show(config: Path | None) -> None:
    """Print the effective configuration (defaults < file < environment), secrets masked."""
    settings = load_or_exit(config)
    click.echo(yaml.safe_dump(to_plain(settings), sort_keys=True), nl=False)


@config_group.command("validate")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def validate_file(file: Path) -> None:
    """Check FILE (with the environment applied on top) and report every problem."""
    try:
        load_settings(file)
    except ConfigError as exc:
        click.echo(f"llm-proxy: {exc}", err=True)
        sys.exit(CONFIG_EXIT_STATUS)
    click.echo(f"{file}: valid")
