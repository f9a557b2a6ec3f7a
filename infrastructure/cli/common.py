"""Options and helpers shared by commands."""

from __future__ import annotations

import os
import shutil
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


def invoked_as(argv0: str | None = None) -> str:
    """This program as the user ran it, so that hints naming a command can be pasted.

    `llm-proxy` and `python -m infrastructure.cli` are the same program; the console script
    arrives as typed when given as a path (`.venv/bin/llm-proxy`), absolute when found on PATH.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    if Path(argv0).name == "llm-proxy":
        if not os.path.isabs(argv0):
            return argv0
        found = shutil.which("llm-proxy")
        return "llm-proxy" if found is not None and Path(found) == Path(argv0) else argv0
    python = shutil.which("python")
    if python is not None and Path(python) == Path(sys.executable):
        return "python -m infrastructure.cli"
    relative = os.path.relpath(sys.executable)
    return f"{relative if not relative.startswith('..') else sys.executable} -m infrastructure.cli"


def as_invoked(text: str) -> str:
    """`text` with every `llm-proxy …` command in backquotes spelt the way the user ran us."""
    program = invoked_as()
    return text if program == "llm-proxy" else text.replace("`llm-proxy ", f"`{program} ")
