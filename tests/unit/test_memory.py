"""Returning freed memory must keep working when clients hold every file descriptor: a
server that died reading /proc under a connection flood was the bug this guards."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from infrastructure.memory import AllocatorTrim

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc"
)


@contextmanager
def every_descriptor_taken() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
    try:
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_growth_is_measured_and_trimmed_with_no_descriptor_left() -> None:
    releases: list[int] = []
    trim = AllocatorTrim(threshold_kib=16 * 1024, release=lambda: releases.append(1))
    try:
        assert trim.available
        assert trim.maybe_trim() == 0
        assert releases == []
        ballast = [bytearray(4096) for _ in range(16 * 1024)]  # 64 MiB, touched
        with every_descriptor_taken():
            with pytest.raises(OSError, match="Too many open files"):
                os.open(os.devnull, os.O_RDONLY)
            trim.maybe_trim()
        assert releases == [1]
        del ballast
    finally:
        trim.close()


def test_glibc_trim_runs_without_raising() -> None:
    trim = AllocatorTrim(threshold_kib=1)
    try:
        ballast = [bytearray(1024) for _ in range(8 * 1024)]
        del ballast
        assert trim.maybe_trim() >= 0
    finally:
        trim.close()
