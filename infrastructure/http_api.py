"""Composition of the OpenAI-compatible HTTP API, imported only when http.enabled is on.

Starlette and uvicorn cost a server that does not serve HTTP memory and start-up time: the
container and the server runner call these functions instead of naming the adapter.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from application.authentication import IdentifyCaller
from application.describe_server import DescribeServer
from application.embed import EmbedText
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from infrastructure.ports import bound

if TYPE_CHECKING:
    from adapters.http import Gate, HttpListener, HttpServices


def build_http_services(
    *,
    execute: ExecutePrompt,
    stream: StreamPrompt,
    describe: DescribeServer,
    embed: EmbedText,
    identify: IdentifyCaller,
    max_body_bytes: int,
) -> HttpServices:
    from adapters.http import HttpServices

    return HttpServices(
        execute=execute,
        stream=stream,
        describe=describe,
        embed=embed,
        identify=identify,
        max_body_bytes=max_body_bytes,
    )


def build_http_gate(services: HttpServices) -> Gate:
    from adapters.http import build_gate

    return build_gate(services)


def build_http_listener(
    gate: Gate, host: str, port: int, *, tls: ssl.SSLContext | None, reuse_port: bool
) -> HttpListener:
    from adapters.http import HttpListener

    # `serve --workers N`: with reuse_port every worker listens on the same port.
    sock = bound(host, port, reuse_port=reuse_port, flag="--http-port")
    sock.setblocking(False)
    return HttpListener(gate, host, sock, tls=tls)
