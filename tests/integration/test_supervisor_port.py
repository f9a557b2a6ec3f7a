"""`serve --workers N` reserves its port the way a single server binds it, so a server stopped a
moment ago (its connections lingering in TIME_WAIT) does not keep the next one from starting."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from infrastructure.ports import bound, reserve_port


def _port_with_a_time_wait_connection() -> int:
    """A port whose listener is gone but one of whose server-side sockets is in TIME_WAIT."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        # The server closes first, so its end (bound to the port) enters TIME_WAIT.
        accepted.close()
        assert client.recv(1) == b""
        client.close()
    return port


def test_a_port_in_time_wait_can_be_reserved_for_workers() -> None:
    port = _port_with_a_time_wait_connection()
    # Without SO_REUSEADDR the kernel refuses the port: the state this bug report needs.
    with socket.socket() as plain, pytest.raises(OSError, match="in use") as refused:
        plain.bind(("127.0.0.1", port))
    assert refused.value.errno == errno.EADDRINUSE

    reserved = reserve_port("127.0.0.1", port)
    try:
        assert reserved.getsockname()[1] == port
    finally:
        reserved.close()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another server listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_port_held_by_a_listening_server_is_still_refused(taken_port: int) -> None:
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{taken_port}"):
        reserve_port("127.0.0.1", taken_port)


def test_a_taken_http_port_names_the_option_that_picks_another(taken_port: int) -> None:
    with pytest.raises(OSError, match=r"already in use .*pick another with --http-port$"):
        bound("127.0.0.1", taken_port, reuse_port=False, flag="--http-port")
