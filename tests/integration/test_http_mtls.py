"""Mutual TLS on the HTTP API: with JWT off the verified client certificate names the caller,
as it does over gRPC; with JWT on, both are needed. Driven with httpx and the openai SDK."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.test_http_api import Records, start, user
from tests.support.certs import Pki, make_pki
from tests.support.tokens import SECRET, claims, sign


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def url(proxy: Proxy) -> str:
    assert proxy.running.http is not None
    return f"https://127.0.0.1:{proxy.running.http.port}/v1"


def context(pki: Pki, client: Pki | None) -> ssl.SSLContext:
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    if client is not None:
        trusted.load_cert_chain(str(client.client), str(client.client_key))
    return trusted


async def mutual(start_proxy: ProxyFactory, pki: Pki, **extra: Any) -> tuple[Proxy, Records]:
    return await start(start_proxy, {**pki.tls(mutual=True), **extra})


async def chat(proxy: Proxy, verify: ssl.SSLContext, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(verify=verify, headers=headers, timeout=10) as client:
        return await client.post(
            f"{url(proxy)}/chat/completions",
            json={"model": "echo", "messages": user("over mutual tls")},
        )


async def test_the_certificate_names_the_caller_when_jwt_is_off(
    start_proxy: ProxyFactory, pki: Pki
) -> None:
    proxy, records = await mutual(start_proxy, pki)

    answer = await chat(proxy, context(pki, pki))
    async with openai.AsyncOpenAI(
        base_url=url(proxy),
        api_key="unused",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=context(pki, pki)),
    ) as sdk:
        models = await sdk.models.list()

    assert answer.status_code == 200, answer.text
    assert "over mutual tls" in answer.json()["choices"][0]["message"]["content"]
    assert "echo" in [model.id for model in models.data]
    [record] = records.records
    assert (record.subject, record.outcome) == ("alice", "ok")


async def test_without_a_certificate_from_the_client_ca_no_request_is_made(
    start_proxy: ProxyFactory, pki: Pki, tmp_path: Path
) -> None:
    proxy, records = await mutual(start_proxy, pki)
    stranger = make_pki(tmp_path / "other", client="mallory")

    for client in (None, stranger):
        # Under TLS 1.3 the server's refusal of the certificate reaches the client as a failed
        # read after its side of the handshake, under 1.2 as a failed connect.
        with pytest.raises((httpx.ConnectError, httpx.ReadError)):
            await chat(proxy, context(pki, client))

    # The refusals were handshakes: nothing reached a use case, and the server still serves.
    assert records.records == []
    assert (await chat(proxy, context(pki, pki))).status_code == 200


async def test_with_jwt_on_the_certificate_alone_is_not_enough(
    start_proxy: ProxyFactory, pki: Pki
) -> None:
    proxy, records = await mutual(start_proxy, pki, auth={"enabled": True, "secret": SECRET})

    refused = await chat(proxy, context(pki, pki))
    answered = await chat(proxy, context(pki, pki), token=sign(claims("svc"), SECRET))

    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert answered.status_code == 200, answered.text
    assert [(r.subject, r.outcome) for r in records.records][-1] == ("svc", "ok")
