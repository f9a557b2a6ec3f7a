"""Building the grpc.aio server: channel options and service registration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from adapters.grpc.health import GrpcHealth, enable_reflection
from adapters.grpc.servicer import ProxyServicer
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

MAX_PENDING_CALLS = 16_384


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a client connection may live. Each one holds a file descriptor and buffers,
    so connections nobody uses must not accumulate until the process runs out of either."""

    # Closed (GOAWAY) after this long without a call in progress; keepalive pings do not
    # count as use. A client's channel reconnects by itself at its next call.
    idle_s: float = 300.0
    # Told to go away after this long even if busy (None: never), so long-lived clients get
    # spread again over replicas; calls in flight then have `age_grace_s` to finish.
    age_s: float | None = 3600.0
    age_grace_s: float = 300.0
    # Streams open at once on one connection. A client past it waits for a free one (gRPC
    # clients queue the call); the bound is what makes a rapid reset (HEADERS then RST_STREAM,
    # by the thousand) cheap: a reset stream counts until the server has let go of it.
    streams: int = 1000


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_options(
    *,
    min_ping_interval_s: float,
    max_message_bytes: int,
    reuse_port: bool = False,
    connections: ConnectionLimits = ConnectionLimits(),
) -> list[tuple[str, int]]:
    ping_ms = int(min_ping_interval_s * 1000)
    age = (
        []
        if connections.age_s is None
        else [("grpc.max_connection_age_ms", _ms(connections.age_s))]
    )
    return [
        ("grpc.max_concurrent_streams", connections.streams),
        ("grpc.max_connection_idle_ms", _ms(connections.idle_s)),
        *age,
        ("grpc.max_connection_age_grace_ms", _ms(connections.age_grace_s)),
        # Idle clients ping every 30 s (vibectl does); never answer that with GOAWAY.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ping_ms),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ping_ms),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Off by default so a second server on a taken port fails loudly instead of splitting
        # traffic; on only for the worker processes of `serve --workers N`, which share a port.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # A burst of new calls waits in gRPC's core until the event loop takes each one; the
        # defaults (1,000 soft, 3,000 hard) cancel a burst of thousands of streams outright.
        ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
        ("grpc.server_max_unrequested_time_in_server", 60),
    ]


def build_server(
    servicer: ProxyServicer,
    *,
    min_ping_interval_s: float,
    max_message_bytes: int,
    interceptors: Sequence[grpc.aio.ServerInterceptor[object, object]] = (),
    health: GrpcHealth | None = None,
    reflection: bool = False,
    reuse_port: bool = False,
    connections: ConnectionLimits = ConnectionLimits(),
) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=server_options(
            min_ping_interval_s=min_ping_interval_s,
            max_message_bytes=max_message_bytes,
            reuse_port=reuse_port,
            connections=connections,
        ),
    )
    pb_grpc.add_VibectlLLMProxyServicer_to_server(servicer, server)
    if health is not None:
        health.register(server)
    if reflection:
        enable_reflection(server, health=health is not None)
    return server
