"""The client against the real server with TLS (private CA) and JWT authentication switched on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from llm_proxy_client import (
    AsyncProxyClient,
    AuthenticationError,
    ModelNotFoundError,
    ProxyClient,
    RetryPolicy,
    UnavailableError,
)
from tests.integration.conftest import Proxy, ProxyFactory
from tests.support.certs import make_certs

SECRET = "client-tests-shared-secret-0123456789abcdef"


def token(models: list[str] | None = None, secret: str = SECRET) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"sub": "client-test", "iat": now, "exp": now + 600}
    if models is not None:
        claims["models"] = models
    return jwt.encode(claims, secret, algorithm="HS256")


async def secured(start_proxy: ProxyFactory, tmp_path: Path) -> tuple[Proxy, Path]:
    certs = make_certs()
    (tmp_path / "key.pem").write_bytes(certs.server_key_pem)
    (tmp_path / "cert.pem").write_bytes(certs.server_cert_pem)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.ca_pem)
    proxy = await start_proxy(
        {
            "server": {
                "tls": {
                    "cert_file": str(tmp_path / "cert.pem"),
                    "key_file": str(tmp_path / "key.pem"),
                }
            },
            "auth": {"enabled": True, "secret": SECRET},
        }
    )
    return proxy, ca


async def test_tls_and_token_from_url_env_and_file(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy, ca = await secured(start_proxy, tmp_path)
    port = proxy.running.port
    async with AsyncProxyClient(f"llm-proxy://{token()}@localhost:{port}", ca_bundle=ca) as c:
        assert (await c.execute("via url", model="echo")).model == "echo"
    env = {"LLM_PROXY_TOKEN": token(), "LLM_PROXY_CA_BUNDLE": str(ca)}
    async with AsyncProxyClient(f"vibectl-server://127.0.0.1:{port}", env=env) as c:
        stream = c.stream("via env", model="echo")
        assert "via env" in "".join([chunk async for chunk in stream])
    token_file = tmp_path / "token"
    token_file.write_text(token() + "\n")

    def sync_call() -> str:
        url = f"llm-proxy://127.0.0.1:{port}"
        with ProxyClient(url, token_file=token_file, ca_bundle=ca, env={}) as client:
            return client.server_info().default_model

    assert await asyncio.to_thread(sync_call) == "echo"


async def test_missing_and_bad_tokens_are_authentication_errors(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy, ca = await secured(start_proxy, tmp_path)
    url = f"llm-proxy://127.0.0.1:{proxy.running.port}"
    async with AsyncProxyClient(url, ca_bundle=ca, env={}) as client:
        with pytest.raises(AuthenticationError) as missing:
            await client.execute("hi", model="echo")
    async with AsyncProxyClient(url, ca_bundle=ca, token=token(secret="x" * 40)) as client:
        with pytest.raises(AuthenticationError) as forged:
            await client.execute("hi", model="echo")
    for caught in (missing, forged):
        assert "LLM_PROXY_TOKEN" in str(caught.value)


async def test_token_without_the_model_is_told_the_model_is_not_found(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy, ca = await secured(start_proxy, tmp_path)
    url = f"llm-proxy://127.0.0.1:{proxy.running.port}"
    async with AsyncProxyClient(url, ca_bundle=ca, token=token(models=["echo"])) as client:
        assert (await client.execute("allowed", model="echo")).model == "echo"
        # A model outside the token's claim reads like one the server does not have.
        with pytest.raises(ModelNotFoundError) as unary:
            await client.execute("forbidden", model="markov")
        with pytest.raises(ModelNotFoundError):
            await client.stream("forbidden", model="markov").result()
        assert "Available models and aliases: echo." in str(unary.value)


async def test_tls_server_refuses_an_untrusting_or_plaintext_client(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy, _ = await secured(start_proxy, tmp_path)
    port = proxy.running.port
    once = RetryPolicy(max_attempts=1)
    for url in (f"llm-proxy://127.0.0.1:{port}", f"llm-proxy+insecure://127.0.0.1:{port}"):
        async with AsyncProxyClient(url, token=token(), retry=once, env={}) as client:
            with pytest.raises(UnavailableError):
                await client.execute("hi", model="echo", timeout=5)
