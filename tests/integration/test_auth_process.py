"""Secure defaults as a newcomer meets them: `serve` started from the command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.commands import run_cli, run_sync

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


def _serve(tmp_path: Path, config_text: str, *args: str) -> Served:
    config = tmp_path / "proxy.yaml"
    config.write_text(config_text)
    process = subprocess.Popen(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config), *args],
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
    return served


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(config_text: str, *args: str) -> Served:
        started.append(_serve(tmp_path, config_text, *args))
        return started[-1]

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
        served.process.wait(timeout=10)


def _printed_commands(notice: str) -> list[str]:
    """The indented lines of the notice: the commands to paste, in order."""
    return [line.strip() for line in notice.splitlines() if line.startswith("  ")]


def _paste(lines: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run lines as a person pasting them into a shell would, from where `serve` ran."""
    return run_sync("bash", "-c", "set -e\n" + "\n".join(lines), env=env)


def test_a_newcomer_gets_a_token_file_and_commands_that_work_as_pasted(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    # Only the port differs from a bare `make serve`: no auth section at all.
    served = serve("server:\n  port: 0\nhttp:\n  port: 0\n")
    notice = "".join(served.stdout)
    export, prompt, *http_commands = _printed_commands(notice)
    assert export.startswith("export LLM_PROXY_TOKEN=$(cat ")
    env = _env(tmp_path / "xdg")

    refused = _paste([prompt], env=env)
    allowed = _paste([export, prompt], env=env)

    assert refused.returncode != 0
    assert "missing credentials" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert "hello" in allowed.stdout
    # The same token works with curl and the openai SDK against the HTTP API.
    curl_start, curl_rest, sdk_start, sdk_rest = http_commands
    curl = _paste([export, curl_start + "\n" + curl_rest], env=env)
    sdk = _paste([export, sdk_start + "\n" + sdk_rest], env=env)
    assert curl.returncode == 0, curl.stderr
    assert '"finish_reason":"stop"' in curl.stdout and "hello" in curl.stdout
    assert sdk.returncode == 0, sdk.stderr
    assert '"prompt": "hi"' in sdk.stdout
    served.stop()
    secret_file = tmp_path / "xdg" / "llm-proxy" / "jwt-secret"
    token_file = secret_file.with_name("dev-token")
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert token_file.stat().st_mode & 0o777 == 0o600
    log = "".join(served.stderr)
    assert str(secret_file) in log
    # Neither the terminal nor the log has the secret or the token; the log says where.
    printed = log + "".join(served.stdout)
    assert secret_file.read_text().strip() not in printed
    assert token_file.read_text().strip() not in printed
    assert "subject=dev" in log
    assert "Traceback" not in log


def test_under_tls_the_printed_commands_work_as_pasted(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    made = run_cli("certs", "generate", "--out", str(certs), env=_env(tmp_path / "xdg"))
    assert made.returncode == 0, made.stderr
    served = serve(
        f"server:\n  port: 0\n  tls:\n    cert_file: {certs / 'server.pem'}\n"
        f"    key_file: {certs / 'server-key.pem'}\nhttp:\n  port: 0\n"
    )
    commands = _printed_commands("".join(served.stdout))

    result = _paste(commands, env=_env(tmp_path / "xdg"))

    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    # curl and the SDK reached the HTTP API over TLS too.
    assert '"finish_reason":"stop"' in result.stdout and '"prompt": "hi"' in result.stdout


def test_workers_print_one_notice_and_write_one_token(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve("server:\n  port: 0\nhttp:\n  port: 0\n", "--workers", "2")
    # Both workers listen before the supervisor is stopped; only one may have spoken.
    while sum("listening on" in line for line in served.stderr) < 2:
        assert served.process.stderr is not None
        line = served.process.stderr.readline()
        assert line, "".join(served.stderr)
        served.stderr.append(line)
    commands = _printed_commands("".join(served.stdout))
    result = _paste(commands, env=_env(tmp_path / "xdg"))
    served.stop()

    assert result.returncode == 0, result.stderr
    notices = "".join(served.stdout).count("Authentication is on")
    assert notices == 1, "".join(served.stdout)


def _run_serve(tmp_path: Path, config_text: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "proxy.yaml"
    config.write_text(config_text)
    return run_cli("serve", "--config", str(config), *args, env=_env(tmp_path / "xdg"))


def test_a_public_address_without_auth_is_refused(tmp_path: Path) -> None:
    result = _run_serve(
        tmp_path, "server:\n  port: 0\nauth:\n  enabled: false\n", "--host", "0.0.0.0"
    )

    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 with authentication off" in result.stderr
    assert "allow_insecure_public" in result.stderr
    assert "Traceback" not in result.stderr
