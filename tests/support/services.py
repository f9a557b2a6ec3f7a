"""The Redis and PostgreSQL servers tests use, started by scripts/services.sh.

`make check` runs the suite under `scripts/services.sh run`, which exports their addresses;
a developer running pytest directly gets them started (and stopped) for the session instead.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"
REDIS_URL_ENV = "LLM_PROXY_TEST_REDIS_URL"
POSTGRES_DSN_ENV = "LLM_PROXY_TEST_POSTGRES_DSN"
REDIS_SERVER_ENV = "LLM_PROXY_TEST_REDIS_SERVER"


@dataclass(frozen=True)
class Services:
    redis_url: str
    postgres_dsn: str
    # The redis-server binary, for tests that need a server of their own to stop and restart.
    redis_server: str


def from_environment(environ: Mapping[str, str]) -> Services | None:
    if REDIS_URL_ENV not in environ or POSTGRES_DSN_ENV not in environ:
        return None
    return Services(
        redis_url=environ[REDIS_URL_ENV],
        postgres_dsn=environ[POSTGRES_DSN_ENV],
        redis_server=environ.get(REDIS_SERVER_ENV) or shutil.which("redis-server") or "",
    )


def parse_exports(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value
    return values


@contextmanager
def started(directory: Path) -> Iterator[Services]:
    """Both servers under `directory` for as long as the block runs."""
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), "start", str(directory)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services.sh start failed:\n{done.stderr}")
        services = from_environment(parse_exports(done.stdout))
        assert services is not None, done.stdout + done.stderr
        yield services
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], check=False, timeout=120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of one test's own, which the test may stop and start again on the same
    port (to see what the proxy does while Redis is away)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self._binary = binary
        self._directory = directory
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self._binary,
                *("--bind", "127.0.0.1", "--port", str(self.port)),
                *("--dir", str(self._directory), "--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
