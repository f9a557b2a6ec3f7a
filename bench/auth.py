"""How to switch the proxy's authentication on and off and get a token it accepts.

Auth on: HS256 with a random shared secret written into the bench's own config (in the
gitignored results directory), and a token minted by the proxy's own `token issue` command so
that the bench never guesses at claims. Auth off: `LLM_PROXY_AUTH__ENABLED=false`. A build whose
`config show` lists no `auth` section has no auth, and `probe` returns None.
"""

from __future__ import annotations

import os
import secrets
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
    secret = secrets.token_hex(32)  # HS256 wants at least 32 bytes of key
    with_auth = yaml.safe_load(config.read_text()) or {}
    with_auth["auth"] = {"enabled": True, "secret": secret}
    auth_config = out_dir / "proxy-auth-token.yaml"
    auth_config.write_text(yaml.safe_dump(with_auth, sort_keys=True))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "infrastructure.cli",
            "token",
            "issue",
            "--config",
            str(auth_config),
            "--subject",
            "bench",
            "--expires-in",
            "12h",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LLM_PROXY_AUTH__ENABLED": "true"},
    )
    token = completed.stdout.strip()
    if completed.returncode != 0 or not token:
        raise RuntimeError(f"token issue failed: {completed.stderr.strip()[-400:]}")
    return AuthSetup(
        token=token,
        config={"auth": {"enabled": True, "secret": secret}},
        env_on={"LLM_PROXY_AUTH__ENABLED": "true"},
        env_off={"LLM_PROXY_AUTH__ENABLED": "false"},
    )
