"""The auth interceptor on a bare grpc.aio server: exemptions, and the principal reaching handlers.

A minimal server with raw-bytes methods isolates the interceptor from the proxy's servicer, so
these tests show exactly what a handler sees, over real gRPC on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from adapters.grpc.auth import AuthInterceptor, current_principal
from application.authentication import IdentifyCaller
from domain.errors import AuthenticationFailed
from domain.principal import Principal


class TableVerifier:
    def __init__(self, table: dict[str, Principal]) -> None:
        self.table = table
        self.calls = 0

    def verify(self, token: str) -> Principal:
        self.calls += 1
        try:
            return self.table[token]
        except KeyError:
            raise AuthenticationFailed("bad signature: unknown test token") from None


async def who(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0.01)  # other calls interleave here; each must keep its own principal
    return current_principal().subject.encode()


async def who_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(3):
        await asyncio.sleep(0.005)
        yield current_principal().subject.encode()


async def health(request: bytes, context: Any) -> bytes:
    return b"SERVING as " + current_principal().subject.encode()


def _handlers() -> list[Any]:
    return [
        grpc.method_handlers_generic_handler(
            "test.Probe",
            {
                "Who": grpc.unary_unary_rpc_method_handler(who),
                "WhoStream": grpc.unary_stream_rpc_method_handler(who_stream),
            },
        ),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)}
        ),
    ]


@pytest.fixture
async def probe() -> AsyncIterator[tuple[grpc.aio.Channel, TableVerifier]]:
    verifier = TableVerifier({f"token-{i}": Principal(f"user-{i}") for i in range(20)})
    server = grpc.aio.server(interceptors=[AuthInterceptor(IdentifyCaller(verifier))])
    server.add_generic_rpc_handlers(_handlers())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, verifier
    await channel.close(None)
    await server.stop(0)


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_each_concurrent_call_sees_its_own_principal_unary_and_streaming(
    probe: tuple[grpc.aio.Channel, TableVerifier],
) -> None:
    channel, _ = probe
    unary = channel.unary_unary("/test.Probe/Who", None, None)
    stream = channel.unary_stream("/test.Probe/WhoStream", None, None)

    async def streamed(i: int) -> list[bytes]:
        return [chunk async for chunk in stream(b"", metadata=_md(f"token-{i}"))]

    answers = await asyncio.gather(*(unary(b"", metadata=_md(f"token-{i}")) for i in range(20)))
    streams = await asyncio.gather(*(streamed(i) for i in range(20)))

    assert answers == [f"user-{i}".encode() for i in range(20)]
    assert streams == [[f"user-{i}".encode()] * 3 for i in range(20)]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), "missing credentials"),
        ((("authorization", "Basic dXNlcjpwdw=="),), "expected 'Bearer <token>'"),
        ((("authorization", "Bearer "),), "after 'Bearer' is empty"),
        (
            (("authorization", "Bearer token-1"), ("authorization", "Bearer token-2")),
            "more than one",
        ),
        ((("authorization", "Bearer forged"),), "bad signature"),
    ],
)
async def test_refused_calls_end_unauthenticated_with_the_reason(
    probe: tuple[grpc.aio.Channel, TableVerifier],
    metadata: tuple[tuple[str, str], ...],
    expected: str,
) -> None:
    channel, _ = probe
    calls = (
        lambda: channel.unary_unary("/test.Probe/Who", None, None)(b"", metadata=metadata),
        lambda: channel.unary_stream("/test.Probe/WhoStream", None, None)(
            b"", metadata=metadata
        ).read(),
    )
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert expected in (caught.value.details() or "")


async def test_the_scheme_is_case_insensitive(
    probe: tuple[grpc.aio.Channel, TableVerifier],
) -> None:
    channel, _ = probe
    answer = await channel.unary_unary("/test.Probe/Who", None, None)(
        b"", metadata=(("authorization", "bearer token-3"),)
    )
    assert answer == b"user-3"


async def test_health_is_exempt_and_anonymous(
    probe: tuple[grpc.aio.Channel, TableVerifier],
) -> None:
    channel, verifier = probe

    answer = await channel.unary_unary("/grpc.health.v1.Health/Check", None, None)(b"")

    assert answer == b"SERVING as anonymous"
    assert verifier.calls == 0


async def test_unknown_methods_stay_unimplemented(
    probe: tuple[grpc.aio.Channel, TableVerifier],
) -> None:
    channel, _ = probe
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/test.Probe/Nope", None, None)(b"", metadata=_md("token-1"))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_an_interceptor_needs_something_to_authenticate_with() -> None:
    with pytest.raises(ValueError, match="verifier or a peer identity"):
        AuthInterceptor()
    with pytest.raises(ValueError, match="verifier or a peer identity"):
        AuthInterceptor(IdentifyCaller())
