"""Returning freed memory must keep working when clients hold every file descriptor: a
server that died reading /proc under a connection flood was the bug this guards."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infrastructure.memory import AllocatorTrim

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc"
)

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: taking every descriptor in the test process would also starve
# whatever other threads pytest's earlier tests left running.
_STARVED = textwrap.dedent(
    """
    import os, resource
    from infrastructure.memory import AllocatorTrim

    releases = []
    trim = AllocatorTrim(threshold_kib=16 * 1024, release=lambda: releases.append(1))
    assert trim.maybe_trim() == 0 and releases == []
    ballast = [bytearray(4096) for _ in range(16 * 1024)]  # 64 MiB, touched
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    while True:
        try:
            held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            starved = exc.strerror
            break
    trim.maybe_trim()
    print(starved, "|", releases)
    """
)


def test_growth_is_measured_and_trimmed_with_no_descriptor_left() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _STARVED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    # Every descriptor was taken, and the trim still read the growth and released it.
    assert completed.stdout.strip() == "Too many open files | [1]"


def test_glibc_trim_runs_without_raising() -> None:
    trim = AllocatorTrim(threshold_kib=1)
    try:
        ballast = [bytearray(1024) for _ in range(8 * 1024)]
        del ballast
        assert trim.maybe_trim() >= 0
    finally:
        trim.close()
