"""TLS and mutual TLS end to end on loopback, with certificates from `certs generate`'s code."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from infrastructure.config.loader import deep_merge, validate
from infrastructure.security import TlsCredentials
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.conftest import BASE_CONFIG, Proxy, ProxyFactory
from tests.integration.helpers import read_chunk, request, script
from tests.support.certs import Pki, make_pki
from tests.support.tokens import SECRET, bearer, claims, sign


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def other_pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "other", client="mallory")


@pytest.fixture
async def channels() -> AsyncIterator[list[grpc.aio.Channel]]:
    opened: list[grpc.aio.Channel] = []
    yield opened
    for channel in opened:
        await channel.close(None)


def secure_stub(
    opened: list[grpc.aio.Channel],
    proxy: Proxy,
    trust: Pki,
    client: Pki | None = None,
) -> pb_grpc.VibectlLLMProxyAsyncStub:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trust.ca.read_bytes(),
        private_key=client.client_key.read_bytes() if client else None,
        certificate_chain=client.client.read_bytes() if client else None,
    )
    channel = grpc.aio.secure_channel(
        proxy.address, credentials, options=(("grpc.use_local_subchannel_pool", 1),)
    )
    opened.append(channel)
    return pb_grpc.VibectlLLMProxyStub(channel)


async def fails(stub: pb_grpc.VibectlLLMProxyAsyncStub) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(request("hi", model="echo"), timeout=5)
    return caught.value


async def works(stub: pb_grpc.VibectlLLMProxyAsyncStub, **kwargs: Any) -> None:
    answer = await stub.Execute(request("hi", model="echo"), timeout=5, **kwargs)
    assert answer.WhichOneof("result") == "success"


async def test_tls_serves_clients_that_trust_its_ca_only(
    start_proxy: ProxyFactory, pki: Pki, other_pki: Pki, channels: list[grpc.aio.Channel]
) -> None:
    proxy = await start_proxy(pki.tls())

    await works(secure_stub(channels, proxy, pki))
    assert (await fails(secure_stub(channels, proxy, other_pki))).code() == (
        grpc.StatusCode.UNAVAILABLE
    )
    # A plaintext client cannot talk to the TLS port at all.
    assert (await fails(proxy.stub)).code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    start_proxy: ProxyFactory,
    pki: Pki,
    other_pki: Pki,
    channels: list[grpc.aio.Channel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llm_proxy.requests")
    proxy = await start_proxy(pki.tls(mutual=True))

    no_cert = await fails(secure_stub(channels, proxy, pki))
    wrong_ca = await fails(secure_stub(channels, proxy, pki, client=other_pki))
    await works(secure_stub(channels, proxy, pki, client=pki))

    assert no_cert.code() == grpc.StatusCode.UNAVAILABLE
    assert wrong_ca.code() == grpc.StatusCode.UNAVAILABLE
    # With JWT off, the certificate's common name is the caller.
    assert any("subject=alice" in record.getMessage() for record in caplog.records)


async def test_mutual_tls_and_jwt_together_need_both(
    start_proxy: ProxyFactory, pki: Pki, channels: list[grpc.aio.Channel]
) -> None:
    auth = {"auth": {"enabled": True, "secret": SECRET}}
    proxy = await start_proxy(deep_merge(pki.tls(mutual=True), auth))
    stub = secure_stub(channels, proxy, pki, client=pki)

    error = await fails(stub)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    await works(stub, metadata=bearer(sign(claims("svc"), SECRET)))


async def test_new_certificates_apply_to_new_connections_without_dropping_streams(
    start_proxy: ProxyFactory, pki: Pki, other_pki: Pki, channels: list[grpc.aio.Channel]
) -> None:
    proxy = await start_proxy(pki.tls())
    before = secure_stub(channels, proxy, pki)
    words = [f"w{i} " for i in range(10)]
    stream = before.StreamExecute(request(script(chunks=words, delay=0.05), model="scripted"))
    first = await read_chunk(stream)
    assert first is not None

    # What SIGHUP does after the certificate files changed.
    tls = proxy.container.tls()
    assert isinstance(tls, TlsCredentials)
    tls.prepare(validate(deep_merge(BASE_CONFIG, other_pki.tls())))()

    await works(secure_stub(channels, proxy, other_pki))
    assert (await fails(secure_stub(channels, proxy, pki))).code() == grpc.StatusCode.UNAVAILABLE
    rest = []
    while (chunk := await read_chunk(stream)) is not None:
        rest.append(chunk)
    assert first.text_chunk + "".join(c.text_chunk for c in rest) == "".join(words)
    assert rest[-1].WhichOneof("chunk_type") == "complete"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_1_2_and_1_3_are_negotiated(
    start_proxy: ProxyFactory, pki: Pki, version: ssl.TLSVersion
) -> None:
    # Existing clients speak TLS 1.3; grpc's Python API cannot pin versions, so this records
    # what grpc's default (1.2 to 1.3) actually offers.
    proxy = await start_proxy(pki.tls())

    def handshake() -> str | None:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.set_alpn_protocols(["h2"])
        context.minimum_version = context.maximum_version = version
        with (
            socket.create_connection(("127.0.0.1", proxy.running.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.version()

    negotiated = await asyncio.get_running_loop().run_in_executor(None, handshake)

    assert negotiated == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
