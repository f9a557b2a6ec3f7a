"""A hostile HTTP/2 client: opens StreamExecute calls and never reads their answers.

It speaks raw HTTP/2 (the `h2` library) so that it can do what no gRPC library lets a client
do: announce a flow-control window of 0, so the server may send headers but not one byte of
any answer, and never open it. It still answers the server's SETTINGS and PINGs, as a real
client stuck behind a slow consumer would, so the connection itself stays healthy.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

from llm_proxy_client.generated import llm_proxy_pb2 as pb

STREAM_PATH = "/vibectl.llm_proxy.VibectlLLMProxy/StreamExecute"


def grpc_frame(message: pb.ExecuteRequest) -> bytes:
    body = message.SerializeToString()
    return struct.pack(">?I", False, len(body)) + body


@dataclass
class StalledClient:
    """One connection with `streams` StreamExecute calls that are never read."""

    host: str
    port: int
    metadata: Sequence[tuple[str, str]] = ()
    # Per stream: the status the server ended it with, once it did (trailers or RST_STREAM).
    ended: dict[int, str] = field(default_factory=dict)
    _sock: socket.socket | None = None
    _conn: h2.connection.H2Connection | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None
    _closed: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def connect(self) -> StalledClient:
        self._sock = socket.create_connection((self.host, self.port), timeout=10)
        self._sock.settimeout(None)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        # Window 0: the server may send headers, never a byte of data, on every stream.
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self._conn = conn
        self._flush()
        self._reader = threading.Thread(target=self._read, name="stalled-h2", daemon=True)
        self._reader.start()
        return self

    def open(self, message: pb.ExecuteRequest) -> int:
        """Starts one StreamExecute call; returns its stream id."""
        assert self._conn is not None
        with self._lock:
            stream_id = self._conn.get_next_available_stream_id()
            headers = [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", STREAM_PATH),
                (":authority", f"{self.host}:{self.port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *self.metadata,
            ]
            self._conn.send_headers(stream_id, headers)
            self._conn.send_data(stream_id, grpc_frame(message), end_stream=True)
        self._flush()
        return stream_id

    def wait_ended(self, count: int, timeout: float) -> bool:
        """Whether at least `count` streams ended within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.ended) >= count, timeout)

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> StalledClient:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _flush(self) -> None:
        assert self._conn is not None and self._sock is not None
        with self._lock:
            data = self._conn.data_to_send()
        if data:
            self._sock.sendall(data)

    def _read(self) -> None:
        assert self._conn is not None and self._sock is not None
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                events = self._conn.receive_data(data)
            for event in events:
                self._note(event)
            try:
                self._flush()
            except OSError:
                return

    def _note(self, event: h2.events.Event) -> None:
        status: str | None = None
        stream_id: int | None = None
        if isinstance(event, h2.events.TrailersReceived):
            stream_id = event.stream_id
            fields = {_text(k): _text(v) for k, v in event.headers}
            status = f"grpc-status {fields.get('grpc-status')}: {fields.get('grpc-message', '')}"
        elif isinstance(event, h2.events.StreamReset):
            stream_id = event.stream_id
            status = f"RST_STREAM {event.error_code!r}"
        elif isinstance(event, h2.events.ResponseReceived):
            fields = {_text(k): _text(v) for k, v in event.headers}
            if "grpc-status" in fields:  # trailers-only answer
                stream_id = event.stream_id
                status = f"grpc-status {fields['grpc-status']}: {fields.get('grpc-message', '')}"
        if stream_id is not None and status is not None:
            with self._changed:
                self.ended[stream_id] = status
                self._changed.notify_all()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
