"""The server as an operator runs it (`serve --config`), for attacks that need the whole
process: its log on stderr, its exit status, its memory."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
METRICS = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")
SCRIPTED_PLUGIN = "tests.support.scripted_models"


def clean_env(config_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_PROXY_")}
    # The HTTP API on a free port: 8080 may be held by a server of the developer's own.
    return {
        **env,
        "PYTHONUNBUFFERED": "1",
        "XDG_CONFIG_HOME": str(config_home),
        "LLM_PROXY_HTTP__PORT": "0",
        **extra,
    }


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int = 0
    metrics_port: int | None = None
    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The log once `predicate` holds for it; fails with the log after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log
            if predicate(log) or time.monotonic() > deadline:
                assert predicate(log), f"not seen within {timeout}s; the log:\n{log[-4000:]}"
                return log
            time.sleep(0.05)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        """SIGTERM, wait for the exit, and return the status (the log is complete after)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self._reader.join(timeout=5)

    _reader: threading.Thread = field(init=False)


def _read(served: Served, ready: threading.Event) -> None:
    assert served.process.stderr is not None
    for line in served.process.stderr:
        with served._lock:
            served.lines.append(line)
        if (match := METRICS.search(line)) is not None:
            served.metrics_port = int(match.group(1))
        if (match := LISTENING.search(line)) is not None:
            served.port = int(match.group(1))
            ready.set()
    # Exited before listening: the caller reports the log.
    ready.set()


@contextmanager
def serve(
    config_text: str,
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    open_files: tuple[int, int] | None = None,
) -> Iterator[Served]:
    """`serve --config` with `config_text`; yields once it listens (and serves /metrics, when
    enabled), kills it at the end. `open_files`: the (soft, hard) RLIMIT_NOFILE it starts with."""

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

    config = tmp_path / "proxy.yaml"
    config.write_text(config_text)
    process = subprocess.Popen(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        env=env if env is not None else clean_env(tmp_path / "xdg"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    served = Served(process)
    ready = threading.Event()
    served._reader = threading.Thread(target=_read, args=(served, ready), daemon=True)
    served._reader.start()
    try:
        if not ready.wait(60) or not served.port:
            raise AssertionError("server did not start:\n" + served.log)
        if "metrics:\n  enabled: true" in config_text:
            served.wait_for(lambda log: METRICS.search(log) is not None)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
