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


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_KIB


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

    def __init__(self, threshold_kib: int = TRIM_THRESHOLD_KIB) -> None:
        self._trim = _glibc_trim() if os.path.exists("/proc/self/statm") else None
        self._threshold_kib = threshold_kib
        self._baseline_kib = rss_kib() if self._trim is not None else 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> int:
        """Trim if RSS grew by the threshold since the last trim; returns the KiB returned."""
        if self._trim is None:
            return 0
        before = rss_kib()
        if before - self._baseline_kib < self._threshold_kib:
            return 0
        self._trim()
        after = rss_kib()
        self._baseline_kib = after
        if before - after > 0:
            log.info(
                "returned %d MiB of memory freed after a burst to the system (RSS %d MiB)",
                (before - after) // 1024,
                after // 1024,
            )
        return before - after
