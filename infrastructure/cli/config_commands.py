"""`config show` and `config validate`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from adapters.llm import ModelConfigError, installed_plugins
from infrastructure.cli.common import CONFIG_EXIT_STATUS, config_option, load_or_exit
from infrastructure.config import ConfigError, Settings, load_settings, to_plain
from infrastructure.server_runner import build_container


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
@click.option(
    "--skip-models",
    is_flag=True,
    help="Check the file only, not its models section against the llm plugins installed here.",
)
def validate_file(file: Path, skip_models: bool) -> None:
    """Check FILE (with the environment applied on top) and report every problem.

    The models section (served models, aliases, default) is checked against the models llm
    can serve in this environment, as `serve` would at start.
    """
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        click.echo(f"llm-proxy: {exc}", err=True)
        sys.exit(CONFIG_EXIT_STATUS)
    if skip_models:
        click.echo(f"{file}: valid (models section not checked)")
        return
    try:
        served = _served_here(settings)
    except ModelConfigError as exc:
        click.echo(f"llm-proxy: {exc}", err=True)
        click.echo(_caveat(), err=True)
        sys.exit(CONFIG_EXIT_STATUS)
    click.echo(f"{file}: valid; {served}")
    click.echo(_caveat())


def _served_here(settings: Settings) -> str:
    registry = build_container(settings).catalog()
    registry.load()
    catalog = registry.current()
    names = ", ".join(model.model_id for model in catalog.models)
    return f"serves {names} (default {catalog.default_model})"


def _caveat() -> str:
    # Plugins and API keys belong to an environment: the server's may differ from this one.
    plugins = ", ".join(installed_plugins()) or "none"
    return (
        f"llm-proxy: models checked against the llm plugins and keys of this environment "
        f"(plugins: {plugins}); a server with other plugins or keys may serve a different set"
    )
