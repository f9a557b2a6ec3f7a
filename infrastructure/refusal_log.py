"""Refused calls in the log without letting a client flood it.

The first refusal of each kind (reason and peer host) in an interval is logged as it happens,
so an operator sees what is going on at once; the rest are counted, and one line per interval
sums them up, with a count per reason and peer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("llm_proxy.refusals")

# Distinct (reason, peer) pairs tracked per interval; beyond, peers are counted together.
MAX_KINDS = 100
OTHER_PEERS = "other peers"


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7', 'ipv6:[::1]:5' -> 'ipv6:[::1]': a client
    opens a new port per connection, but is one client."""
    head, sep, tail = peer.rpartition(":")
    return head if sep and tail.isdigit() and ":" in head else peer


class RefusalLog:
    """Implements application.ports.RefusalObserver with a rate-limited log."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._window_started = clock()
        # Refusals not logged one by one in this interval, per (reason, peer host).
        self._counts: dict[tuple[str, str], int] = {}

    def call_refused(self, reason: str, peer: str, detail: str) -> None:
        now = self._clock()
        if now - self._window_started >= self.interval_s:
            self.flush(now)
        key = (reason, peer_host(peer))
        count = self._counts.get(key)
        if count is None:
            if len(self._counts) < MAX_KINDS:
                self._counts[key] = 0
                log.info("refused a call (%s) from %s: %s", reason, key[1], detail)
                return
            key = (reason, OTHER_PEERS)
            count = self._counts.get(key, 0)
        self._counts[key] = count + 1

    def flush(self, now: float | None = None) -> None:
        """Log the summary of the interval that ends now, and start the next one."""
        now = self._clock() if now is None else now
        repeated = sorted(
            ((count, reason, peer) for (reason, peer), count in self._counts.items() if count),
            reverse=True,
        )
        if repeated:
            log.warning(
                "%d more refused calls in the last %.0fs: %s",
                sum(count for count, _, _ in repeated),
                now - self._window_started,
                ", ".join(f"{reason} from {peer}: {count}" for count, reason, peer in repeated),
            )
        self._counts.clear()
        self._window_started = now
