"""Secure defaults as a newcomer meets them: `serve` started from the command line."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        # read(), not communicate(): lines the fixture's readers already buffered would be lost.
        assert self.process.stderr is not None and self.process.stdout is not None
        self.stderr.append(self.process.stderr.read())
        self.stdout.append(self.process.stdout.read())
        self.process.wait(timeout=15)


def _env(config_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_PROXY_")}
    return {**env, "PYTHONUNBUFFERED": "1", "XDG_CONFIG_HOME": str(config_home)}


@pytest.fixture
def default_server(tmp_path: Path) -> Iterator[Served]:
    # Only the port differs from a bare `make serve`: no auth section at all.
    config = tmp_path / "proxy.yaml"
    config.write_text("server:\n  port: 0\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        env=_env(tmp_path / "xdg"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None and process.stdout is not None
    served = Served(process, 0)
    for line in process.stderr:
        served.stderr.append(line)
        match = LISTENING.search(line)
        if match:
            served.port = int(match.group(1))
            break
    else:
        raise AssertionError("server exited before listening:\n" + "".join(served.stderr))
    for line in process.stdout:
        served.stdout.append(line)
        if line.startswith("More tokens:"):
            break
    try:
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _run_printed(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_newcomer_gets_a_token_and_a_command_that_works(
    default_server: Served, tmp_path: Path
) -> None:
    notice = "".join(default_server.stdout)
    token = re.search(r"export LLM_PROXY_TOKEN=(\S+)", notice)
    command = re.search(r"^\s+(\S*llm-proxy prompt .*)$", notice, re.MULTILINE)
    assert token and command, notice
    env = _env(tmp_path / "xdg")

    # Run the command exactly as printed, from where the newcomer ran `serve`.
    argv = shlex.split(command.group(1))
    refused = _run_printed(argv, env=env)
    allowed = _run_printed(argv, env={**env, "LLM_PROXY_TOKEN": token.group(1)})

    assert refused.returncode != 0
    assert "missing credentials" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert "hello" in allowed.stdout
    default_server.stop()
    secret_file = tmp_path / "xdg" / "llm-proxy" / "jwt-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    log = "".join(default_server.stderr)
    assert str(secret_file) in log
    # The log has where the secret is, never the secret or a token.
    assert secret_file.read_text().strip() not in log + notice
    assert token.group(1) not in log
    assert "subject=dev" in log
    assert "Traceback" not in log


def _run_serve(tmp_path: Path, config_text: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "proxy.yaml"
    config.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config), *args],
        cwd=ROOT,
        env=_env(tmp_path / "xdg"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_public_address_without_auth_is_refused(tmp_path: Path) -> None:
    result = _run_serve(
        tmp_path, "server:\n  port: 0\nauth:\n  enabled: false\n", "--host", "0.0.0.0"
    )

    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 with authentication off" in result.stderr
    assert "allow_insecure_public" in result.stderr
    assert "Traceback" not in result.stderr
