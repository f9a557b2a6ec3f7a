"""Giving memory freed after a burst back to the operating system.

gRPC's core allocates per call with the C allocator; after a burst (thousands of streams
opened and reset) glibc keeps the freed pages for reuse, so RSS stays at the burst's peak.
malloc_trim hands them back. It is not free (it walks the heap: 80-350 ms measured after a
500 MB burst), so it runs off the event loop and only when RSS has grown well past what it was
after the last trim.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable

log = logging.getLogger("llm_proxy.server")

# Growth since the last trim that is worth a trim.
TRIM_THRESHOLD_KIB = 32 * 1024
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class _ResidentSize:
    """RSS read through a descriptor opened once: when clients hold every file descriptor the
    process may open, reading it must not need a new one."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)

    def kib(self) -> int | None:
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE_KIB
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        os.close(self._fd)


def _glibc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    return lambda: trim(0)


class AllocatorTrim:
    """`maybe_trim()` from a thread every so often; a no-op without glibc or /proc."""

    def __init__(
        self,
        threshold_kib: int = TRIM_THRESHOLD_KIB,
        *,
        release: Callable[[], object] | None = None,
    ) -> None:
        """`release`: what returns freed memory (glibc's malloc_trim when not given)."""
        self._trim: Callable[[], object] | None = None
        self._rss: _ResidentSize | None = None
        self._threshold_kib = threshold_kib
        self._baseline_kib = 0
        try:
            self._rss = _ResidentSize()
        except OSError:
            # No /proc (or no descriptor to spare right now): nothing to measure a burst by.
            return
        self._trim = release if release is not None else _glibc_trim()
        self._baseline_kib = self._rss.kib() or 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> int:
        """Trim if RSS grew by the threshold since the last trim; returns the KiB returned."""
        if self._trim is None or self._rss is None:
            return 0
        before = self._rss.kib()
        if before is None or before - self._baseline_kib < self._threshold_kib:
            return 0
        self._trim()
        after = self._rss.kib()
        if after is None:
            return 0
        self._baseline_kib = after
        if before - after > 0:
            log.info(
                "returned %d MiB of memory freed after a burst to the system (RSS %d MiB)",
                (before - after) // 1024,
                after // 1024,
            )
        return before - after

    def close(self) -> None:
        if self._rss is not None:
            self._rss.close()
            self._rss = None
