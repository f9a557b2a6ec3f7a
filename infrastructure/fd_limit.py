"""The open-file limit the server needs: one descriptor per client connection, plus a few
dozen of its own (listening sockets, the event loop, model threads, log and metrics)."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("llm_proxy.server")

# Enough for a few thousand concurrent client connections; below it, say so at start.
RECOMMENDED_OPEN_FILES = 4096


def raise_open_file_limit(wanted: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted`, as far as the hard limit allows (which
    needs no privilege), and return the limit in force. Many systems start processes with a
    soft limit of 1,024, which a few hundred idle clients exhaust."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < RECOMMENDED_OPEN_FILES:
        log.warning(
            "the open-file limit is %d (hard limit %s): each client connection takes one, so "
            "new clients will be refused after a few hundred; raise it to at least %d "
            "(ulimit -n, docker run --ulimit nofile=..., LimitNOFILE= in systemd)",
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            RECOMMENDED_OPEN_FILES,
        )
    return int(soft)
