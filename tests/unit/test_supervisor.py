"""The supervisor's side of a forked worker: awaiting its exit status, and which optional
adapters it imports before forking."""

from __future__ import annotations

import os
import signal
import time

import pytest

from infrastructure.config.loader import validate
from infrastructure.preload import configured_modules
from infrastructure.supervisor import WorkerProcess


def _child(then: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            if then == "wait":
                time.sleep(60)
        finally:
            os._exit(3)
    return pid


async def test_a_worker_exit_status_is_awaited() -> None:
    process = WorkerProcess(_child("exit"))
    assert await process.wait() == 3
    assert process.returncode == 3
    # Reaped: the pid is not ours any more, and no signal goes to whoever has it now.
    process.send_signal(signal.SIGTERM)
    with pytest.raises(ChildProcessError):
        os.waitpid(process.pid, os.WNOHANG)


async def test_a_killed_worker_reports_the_signal() -> None:
    process = WorkerProcess(_child("wait"))
    process.kill()
    assert await process.wait() == -signal.SIGKILL


def test_the_supervisor_imports_the_adapters_its_configuration_turns_on() -> None:
    assert configured_modules(validate({})) == ["adapters.http", "adapters.quota.shared"]
    everything = validate(
        {
            "http": {"enabled": False},
            "metrics": {"enabled": True},
            "tracing": {"enabled": True, "exporter": "none"},
            "quotas": {"store": "redis", "redis_url": "redis://127.0.0.1:1/0"},
            "ledger": {"backend": "postgres", "postgres_dsn": "postgresql://u@127.0.0.1/db"},
        }
    )
    assert configured_modules(everything) == [
        "adapters.metrics",
        "adapters.tracing",
        "adapters.quota.redis",
        "adapters.ledger.postgres",
    ]
