"""Starting the servers under test as child processes and watching them through /proc."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc

from bench import procinfo
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# Where the proxy under test runs from: this checkout, or another one (`--proxy-root`, e.g. a
# worktree of an earlier commit) to measure a change before and after against the same floor.
PROXY_ROOT = ROOT


def use_proxy_root(root: Path) -> None:
    global PROXY_ROOT
    if not (root / "infrastructure" / "cli").is_dir():
        raise SystemExit(f"--proxy-root {root}: not a checkout of llm-proxy")
    PROXY_ROOT = root.resolve()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerFailed(RuntimeError):
    pass


@dataclass
class ServerProcess:
    """One server under test. Its output goes to a log file so that a full pipe never stalls it."""

    name: str
    argv: Sequence[str]
    port: int
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None
    _log: IO[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerFailed(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout_s: float = 30.0) -> float:
        """Start and wait for the first successful GetServerInfo; returns seconds it took."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        environment = {**os.environ, **self.env}
        started = time.perf_counter()
        self.process = subprocess.Popen(
            list(self.argv), cwd=self.cwd, env=environment, stdout=self._log, stderr=self._log
        )
        try:
            wait_until_serving(self.target, started + timeout_s, self.process)
        except ServerFailed:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        return self.startup_s

    def rss_kb(self) -> int:
        return procinfo.tree_rss_kb(self.pid)

    def cpu_s(self) -> float:
        return procinfo.tree_cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until_serving(target: str, deadline: float, process: subprocess.Popen[bytes]) -> None:
    """Poll the TCP port cheaply first, then ask GetServerInfo on a fresh channel.

    A fresh channel per attempt avoids grpc's reconnect back-off, which would otherwise add up
    to a second to the measured start-up time.
    """
    host, port = target.rsplit(":", 1)
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"server exited with status {process.returncode} while starting")
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                pass
        except OSError:
            time.sleep(0.002)
            continue
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.VibectlLLMProxyStub(channel)
            try:
                stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=1.0)
                return
            except grpc.RpcError as exc:
                # UNAUTHENTICATED still proves the server answers.
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    return
        time.sleep(0.002)
    raise ServerFailed(f"no answer from {target} in time")


def floor_server(
    log_dir: Path, *, llm_model: str | None = None, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """The floor; with `llm_model`, the llm floor answering from that model (--llm)."""
    port = free_port()
    name = "floor" if llm_model is None else "llm-floor"
    argv = [sys.executable, "-m", "bench.floor", "--host", HOST, "--port", str(port)]
    return ServerProcess(
        name=name,
        argv=argv if llm_model is None else [*argv, "--llm", llm_model],
        port=port,
        log_path=log_dir / f"{name}.log",
        env=dict(env or {}),
    )


def proxy_server(
    name: str,
    log_dir: Path,
    config: Path,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "infrastructure.cli",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--config",
        str(config),
        *extra_args,
    ]
    return ServerProcess(
        name=name,
        argv=argv,
        port=port,
        log_path=log_dir / f"{name}.log",
        env={**foreign_root_env(), **(env or {})},
        cwd=PROXY_ROOT,
    )


def foreign_root_env() -> dict[str, str]:
    """What a proxy from another checkout needs: this environment's llm-proxy-client plugin
    registers this checkout's generated protobuf code, which collides with the other's copy."""
    if PROXY_ROOT == ROOT:
        return {}
    return {"LLM_LOAD_PLUGINS": "llm-echo,llm-markov"}


def serve_help() -> str:
    """The serve command's help text, to find out which options this build supports."""
    completed = subprocess.run(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--help"],
        cwd=PROXY_ROOT,
        env={**os.environ, **foreign_root_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.stdout + completed.stderr


@dataclass
class RedisProcess:
    """A private redis-server for the shared-limits runs (not persisted, loopback only)."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerFailed("redis-server is not installed (scripts/services.sh install)")
        self.process = subprocess.Popen(
            [binary, "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServerFailed(f"redis-server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
