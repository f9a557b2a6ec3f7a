"""Claiming the server's TCP port, with errors a person can act on.

grpc reports a taken port only as a C-core log line and "Failed to bind"; checking first with a
plain socket, bound the way grpc binds, gives one clear line instead.
"""

from __future__ import annotations

import errno
import socket


def bound(host: str, port: int, *, reuse_port: bool, flag: str = "--port") -> socket.socket:
    """A socket bound (not listening) as grpc binds its own; `flag` is the option a person
    would use to pick another port."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR as grpc sets it on its own listeners: connections of a server that just
        # stopped linger in TIME_WAIT for a minute and must not keep the port from a new one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(cannot_listen(host, port, exc, flag)) from exc
    return sock


def cannot_listen(host: str, port: int, error: OSError, flag: str = "--port") -> str:
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {host}:{port}: the port is already in use (another server?); "
            f"pick another with {flag}"
        )
    return f"cannot listen on {host}:{port}: {reason}"


def ensure_free(host: str, port: int) -> None:
    """Raise OSError with a readable message when a server could not listen on host:port."""
    if port == 0:
        return
    bound(host, port, reuse_port=False).close()


def reserve_port(host: str, port: int, *, flag: str = "--port") -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: resolves port 0 for every worker, and fails now,
    with a clear error, when a server that does not share the port already holds it."""
    return bound(host, port, reuse_port=True, flag=flag)
