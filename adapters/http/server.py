"""Serving the HTTP app with uvicorn inside the event loop the gRPC server runs in.

uvicorn normally owns the process: it installs signal handlers and re-raises the signal when
it exits, which would cut our drain short. Here the server runner owns signals, and this
listener only starts, drains (answering 503 to new requests while in-flight ones finish) and
stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Generator

import uvicorn
from cryptography import x509
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

from adapters.http.app import PEER_COMMON_NAME, Receive, Scope, Send, send_json
from adapters.http.errors import encode, error_body

log = logging.getLogger("llm_proxy.http")

_STARTUP_POLL_S = 0.005


class Gate:
    """Health probes, and the door: open while serving, answering 503 once draining.

    Counts requests in flight so that a drain knows when the last one has finished.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, b'{"status":"ok"}')
            return
        if path == "/readyz":
            if self.draining:
                await send_json(send, 503, b'{"status":"draining"}')
            else:
                await send_json(send, 200, b'{"status":"ready"}')
            return
        if self.draining:
            body = error_body(
                "the server is shutting down; retry on another replica or in a moment",
                status=503,
                code="shutting_down",
            )
            await send_json(send, 503, encode(body), [(b"retry-after", b"1")])
            return
        self.in_flight += 1
        self._idle.clear()
        try:
            await self._app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The server runner handles SIGTERM/SIGINT/SIGHUP for every listener; uvicorn's own
        # handlers would replace them and re-raise the signal when it stops.
        yield


def verified_peer_names(ssl_object: ssl.SSLObject | None) -> dict[str, str]:
    """The client certificate's subject, when the handshake verified one (the context requires
    a certificate signed by the client CA, so a certificate here is a verified one)."""
    if ssl_object is None:
        return {}
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return {}
    subject = x509.load_der_x509_certificate(der).subject
    names = {"client_cert_name": subject.rfc4514_string()}
    common = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        value = common[0].value
        names[PEER_COMMON_NAME] = value if isinstance(value, str) else value.decode()
    return names


class _PeerAwareProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, handing the verified client certificate to the app in the
    ASGI TLS extension (`scope["extensions"]["tls"]`), which uvicorn itself does not fill.
    Read once a connection, not once a request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        names = verified_peer_names(transport.get_extra_info("ssl_object"))
        if not names:
            return
        app = self.app

        async def with_peer(scope: Scope, receive: Receive, send: Send) -> None:
            scope["extensions"] = {**scope.get("extensions", {}), "tls": names}
            await app(scope, receive, send)

        self.app = with_peer


class HttpListener:
    """The HTTP API on one address, in the running event loop."""

    name = "http"

    def __init__(
        self,
        gate: Gate,
        host: str,
        sock: socket.socket,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`sock`: bound to `host`, not yet listening, non-blocking."""
        self._gate = gate
        self.host = host
        self._socket = sock
        self.port: int = self._socket.getsockname()[1]
        self.tls = tls
        self._server: _EmbeddedServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._stopping: asyncio.Future[None] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def start(self) -> None:
        config = uvicorn.Config(
            self._gate,
            http=_PeerAwareProtocol if self.tls is not None else "auto",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            # Forwarded headers would let any local client claim another address.
            proxy_headers=False,
            # Our own drain decides how long in-flight requests get; this is what is left
            # after it for uvicorn's own (closing connections).
            timeout_graceful_shutdown=1,
        )
        config.load()
        # A context built by the caller, so that a reload can load a new certificate into it.
        config.ssl = self.tls
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._server = server = _EmbeddedServer(config)
        self._serving = asyncio.ensure_future(server.serve(sockets=[self._socket]))
        while not server.started:
            if self._serving.done():
                self._serving.result()
                raise OSError(f"the HTTP server on {self.host}:{self.port} did not start")
            await asyncio.sleep(_STARTUP_POLL_S)

    async def drain(self) -> None:
        """/readyz says not ready and new requests get 503; in-flight ones go on."""
        self._gate.draining = True

    async def stop(self, grace_s: float) -> None:
        """Let in-flight requests finish for up to grace_s, then close everything. Called
        again with 0 while a stop is under way, it cuts the wait short."""
        if grace_s <= 0:
            self._hurry.set()
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_s))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> None:
        await self.drain()
        if self._gate.in_flight and not self._hurry.is_set():
            idle = asyncio.ensure_future(self._gate.idle())
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait((idle, hurry), timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            hurry.cancel()
        server = self._server
        if server is None or self._serving is None:
            self._socket.close()
            return
        if self._gate.in_flight:
            # Out of time: uvicorn cancels what is still running (and so its model calls).
            server.config.timeout_graceful_shutdown = 0
        server.should_exit = True
        await self._serving
