"""The README's shell commands, run as a reader pastes them: top to bottom, in one shell.

Only what cannot run here is left out (installing from the network, interactive prompts, `make`
itself, whose `make serve` the newcomer test covers by running `serve` as it does). The test
stands in for the reader's own terminals: it starts the server the quick start's `make serve`
would, runs a `… llm-proxy serve` line in the background as a reader's second terminal would,
and gives each server a free port in place of the README's 50051.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.commands import run_sync

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_PORT = "50051"

# Lines that cannot run in a test, by how they start; each with the reason.
SKIPPED = {
    "make ": "the build itself; `make serve` is what the harness's own server stands in for",
    "llm install ": "downloads a plugin from the network",
    "llm keys set ": "asks for a key interactively",
    "LLM_PROXY_MODELS__SERVE=": "serves hosted models, which need their plugins and keys",
}


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment-only lines dropped."""
    joined = block.replace("\\\n", " ")
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def as_script(lines: list[str], first_port: int) -> tuple[str, list[str]]:
    """A bash script running the README's commands, and the lines it left out."""
    script = ["set -euo pipefail"]
    skipped: list[str] = []
    port = first_port
    for line in lines:
        if line.startswith(tuple(SKIPPED)):
            skipped.append(line)
            continue
        if re.search(r"(^|\s)llm-proxy serve$", line):
            # A second terminal: its own port, started in the background, waited for.
            port = free_port()
            script.append(f"{line} --port {port} >serve-{port}.log 2>&1 &")
            script.append(
                f"for _ in $(seq 300); do (: >/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break;"
                " sleep 0.1; done"
            )
            continue
        script.append(line.replace(README_PORT, str(port)))
    return "\n".join(script), skipped


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], int, int]]:
    """A reader's home and checkout (the project's .venv, nothing else), and the quick start's
    server running as `make serve` would run it, with that home."""
    home = tmp_path / "home"
    home.mkdir()
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    ambient = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLM_PROXY_", "LLM_USER_PATH", "XDG_", "OPENAI", "VIRTUAL_ENV"))
    }
    env = ambient | {"HOME": str(home), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    # Its own HTTP port, so that a parallel run's server on the default 8080 cannot answer.
    http_port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infrastructure.cli",
            "serve",
            "--port",
            str(port),
            "--http-port",
            str(http_port),
        ],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    for line in server.stderr:
        if "listening on" in line:
            break
    else:
        raise AssertionError("the quick start's server did not start")
    # The development token is written once every listener is up, a moment after this line.
    token_file = home / ".config" / "llm-proxy" / "dev-token"
    deadline = time.monotonic() + 30
    while not token_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        # Where the README's commands find `make serve`'s server on 127.0.0.1:50051 by default.
        yield (
            checkout,
            env | {"LLM_PROXY_URL": f"llm-proxy+insecure://127.0.0.1:{port}"},
            port,
            http_port,
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_readme_commands_work_as_pasted(
    reader: tuple[Path, dict[str, str], int, int],
) -> None:
    checkout, env, port, http_port = reader
    text = README.read_text(encoding="utf-8")
    # The configuration example is the reader's `my.yaml`, validated by a README command.
    (checkout / "my.yaml").write_text(blocks(text, "yaml")[0].replace(README_PORT, str(port)))
    lines = [line for block in blocks(text, "sh") for line in commands(block)]
    script, skipped = as_script(lines, port)
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")

    result = run_sync(
        "bash",
        "-c",
        script + "\nkill $(jobs -p) 2>/dev/null || true",
        # The README's second server takes the default HTTP port, 8080, which another test
        # run on this machine may hold: any free one will do, the script never calls it.
        env=env | {"LLM_PROXY_HTTP__PORT": "0"},
        timeout=240,
        cwd=checkout,
    )

    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n---\n{script}"
    # What ran: the first prompt, config, the plugin, the CLI, tokens, and TLS from a second
    # server started the way the README starts it.
    assert "Hello, proxy" in result.stdout
    assert "my.yaml: valid; serves" in result.stdout
    assert '"system": "be brief"' in result.stdout
    assert "verdict: accepted: subject 'alice'" in result.stdout
    assert " at llm-proxy://127.0.0.1:" in result.stdout
    assert skipped, "the lines left out are listed in SKIPPED"
