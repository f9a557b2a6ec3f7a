"""Commands run as a user runs them: subprocesses started in the checkout, their output captured.

`run` (async, for tests whose server lives in the test's event loop) starts from this process's
environment without the LLM_PROXY_* and GRPC_* settings of the developer's shell, plus what the
test gives. `run_sync` passes `env` as it is (None: this process's environment, which carries
the suite's own settings, such as the HTTP API on a free port).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `llm-proxy`, as the entry point deployments use.
PROXY_CLI = (sys.executable, "-m", "infrastructure.cli")
LLM = str(Path(sys.executable).with_name("llm"))


def ambient() -> dict[str, str]:
    """This process's environment without llm-proxy's and gRPC's own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LLM_PROXY_", "GRPC_"))}


async def run(
    *command: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `command`, with `env` added to the ambient environment."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=ambient() | dict(env or {}),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), timeout
    )
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def run_sync(
    *command: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`llm-proxy ARGS`, to completion."""
    return run_sync(*PROXY_CLI, *args, env=env, timeout=timeout)
