"""Mutual TLS from every bundled client against the real server: the sync and async Python
clients, the `prompt`/`models` commands and the `llm` plugin, each with certificates from
`certs generate`'s code, and each refused without them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llm_proxy_client import AsyncProxyClient, ProxyClient, UnavailableError
from tests.integration.conftest import Proxy, ProxyFactory
from tests.support.certs import Pki, make_pki
from tests.support.commands import LLM, PROXY_CLI, run


@pytest.fixture
async def mtls(start_proxy: ProxyFactory, tmp_path: Path) -> tuple[Proxy, Pki]:
    pki = make_pki(tmp_path / "pki")
    return await start_proxy(pki.tls(mutual=True)), pki


def url(proxy: Proxy) -> str:
    return f"llm-proxy://127.0.0.1:{proxy.running.port}"


def identity_env(pki: Pki) -> dict[str, str]:
    return {
        "LLM_PROXY_CA_BUNDLE": str(pki.ca),
        "LLM_PROXY_CLIENT_CERT": str(pki.client),
        "LLM_PROXY_CLIENT_KEY": str(pki.client_key),
    }


async def test_sync_client_with_certificate_arguments(mtls: tuple[Proxy, Pki]) -> None:
    proxy, pki = mtls

    def call(with_identity: bool) -> str:
        identity = {"client_cert": pki.client, "client_key": pki.client_key}
        with ProxyClient(
            url(proxy),
            ca_bundle=pki.ca,
            env={},
            timeout=10,
            **(identity if with_identity else {}),  # type: ignore[arg-type]
        ) as client:
            return client.execute("hello mtls", model="echo").model

    assert await asyncio.to_thread(call, True) == "echo"
    with pytest.raises(UnavailableError):
        await asyncio.to_thread(call, False)


async def test_async_client_with_certificate_from_the_environment(
    mtls: tuple[Proxy, Pki],
) -> None:
    proxy, pki = mtls
    async with AsyncProxyClient(url(proxy), env=identity_env(pki), timeout=10) as client:
        stream = client.stream("streamed over mtls", model="echo")
        assert "streamed over mtls" in "".join([chunk async for chunk in stream])
        assert (await stream.result()).model == "echo"
    without = {"LLM_PROXY_CA_BUNDLE": str(pki.ca)}
    async with AsyncProxyClient(url(proxy), env=without, timeout=10) as client:
        with pytest.raises(UnavailableError):
            await client.execute("hi", model="echo")


async def test_cli_prompt_with_flags_and_models_with_environment(
    mtls: tuple[Proxy, Pki],
) -> None:
    proxy, pki = mtls
    status, out, err = await run(
        *PROXY_CLI,
        "prompt",
        "over mutual tls",
        "-m",
        "echo",
        "--no-stream",
        "--server",
        url(proxy),
        "--ca-bundle",
        str(pki.ca),
        "--client-cert",
        str(pki.client),
        "--client-key",
        str(pki.client_key),
        env={},
    )
    assert status == 0, err
    assert "over mutual tls" in out
    status, out, err = await run(
        *PROXY_CLI, "models", "--server", url(proxy), env=identity_env(pki)
    )
    assert status == 0, err
    assert "echo" in out
    status, _, err = await run(
        *PROXY_CLI,
        "models",
        "--server",
        url(proxy),
        "--ca-bundle",
        str(pki.ca),
        "--timeout",
        "5",
        env={},
    )
    assert status == 9, err  # unreachable: the handshake needs a client certificate


async def test_llm_plugin_with_certificate_from_the_environment(
    mtls: tuple[Proxy, Pki], tmp_path: Path
) -> None:
    proxy, pki = mtls
    env = identity_env(pki) | {"LLM_PROXY_URL": url(proxy), "LLM_USER_PATH": str(tmp_path)}
    status, out, err = await run(LLM, "-m", "proxy/echo", "plugin over mtls", env=env)
    assert status == 0, err
    assert "plugin over mtls" in out
    env.pop("LLM_PROXY_CLIENT_KEY")
    status, _, err = await run(LLM, "-m", "proxy/echo", "hi", env=env)
    assert status != 0
    assert "mutual TLS needs both" in err
