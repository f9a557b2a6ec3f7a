"""Several servers behind one client URL, balanced round robin; one is killed mid-run and the
calls that had produced no output yet finish on the other."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llm_proxy_client import ProxyClient
from tests.integration.helpers import script

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


class Server:
    def __init__(self, tmp_path: Path, name: str) -> None:
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            f"server:\n  port: 0\n  name: {name}\n"
            "models:\n  plugin_modules: [tests.support.scripted_models]\n"
            "auth:\n  enabled: false\n"
        )
        self.log = tmp_path / f"{name}.log"
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config)],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log.read_text())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise AssertionError("server exited:\n" + self.log.read_text())
            time.sleep(0.1)
        raise AssertionError("server did not start:\n" + self.log.read_text())

    def requests_served(self) -> int:
        return self.log.read_text().count("outcome=ok")

    def wait_for_served(self, count: int) -> int:
        # Request log lines reach the file in batches; wait for them rather than for a time.
        deadline = time.monotonic() + 20
        while self.requests_served() < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.requests_served()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    first = Server(tmp_path, "alpha")
    try:
        second = Server(tmp_path, "beta")
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_calls_are_balanced_and_survive_a_server_killed_mid_run(
    two_servers: tuple[Server, Server],
) -> None:
    alpha, beta = two_servers
    url = f"llm-proxy+insecure://127.0.0.1:{alpha.port},127.0.0.1:{beta.port}"
    with ProxyClient(url, timeout=60) as client:
        names = {client.server_info(refresh=True).server_name for _ in range(8)}
        assert names == {"alpha", "beta"}  # round robin, not the first reachable one only

        # Slow answers, so that some are on alpha when it dies, none having produced output.
        slow = script(chunks=["done"], delay=1.0)
        with ThreadPoolExecutor(max_workers=6) as pool:
            calls = [pool.submit(client.execute, slow, model="scripted") for _ in range(6)]
            time.sleep(0.5)
            alpha.process.send_signal(signal.SIGKILL)
            results = [call.result(timeout=60) for call in calls]
        assert [r.text for r in results] == ["done"] * 6
        assert sum(r.client_retries for r in results) >= 1  # some were moved to beta

        before = beta.wait_for_served(3)  # at least its share of the slow calls
        after_kill = [client.execute("still there?", model="echo").text for _ in range(4)]
        assert all("still there?" in text for text in after_kill)
        assert all(r.client_retries == 0 for r in [client.execute("x", model="echo")])
    assert beta.wait_for_served(before + 5) >= before + 5  # everything after the kill
