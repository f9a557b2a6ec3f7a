"""What a person sees when a command goes wrong: one line of our own that says what to do, in
the form they ran the program, and none of gRPC's own log lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.integration.conftest import Proxy, ProxyFactory
from tests.support.certs import Pki, make_pki
from tests.support.commands import LLM, PROXY_CLI, ROOT, run
from tests.support.tokens import SECRET, claims, sign

SCRIPT = os.path.relpath(Path(sys.executable).with_name("llm-proxy"), ROOT)


async def tls_proxy(start_proxy: ProxyFactory, tmp_path: Path) -> tuple[Proxy, Pki]:
    pki = make_pki(tmp_path / "pki")
    return await start_proxy(pki.tls()), pki


async def test_tls_against_a_plaintext_server_is_one_line_at_once(proxy: Proxy) -> None:
    status, out, err = await run(
        SCRIPT, "prompt", "hi", "-m", "echo", "--server", f"llm-proxy://{proxy.address}"
    )

    assert (status, out) == (9, "")
    # Exactly this: no "after 5 attempts" (a handshake that failed this way is not retried),
    # and none of the C core's "Handshake failed" lines.
    assert err == (
        f"llm-proxy: error: the server at {proxy.address} does not speak TLS; "
        f"use llm-proxy+insecure://{proxy.address}\n"
    )


async def test_plaintext_against_a_tls_server_suggests_tls(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy, _ = await tls_proxy(start_proxy, tmp_path)
    status, _, err = await run(
        SCRIPT,
        "models",
        "--server",
        f"llm-proxy+insecure://{proxy.address}",
        "--timeout",
        "5",
    )
    assert status == 9
    assert f"If the server speaks TLS, use llm-proxy://{proxy.address}." in err
    assert len(err.splitlines()) == 1, err


async def test_an_untrusted_certificate_says_how_to_trust_it(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy, _ = await tls_proxy(start_proxy, tmp_path)
    status, _, err = await run(SCRIPT, "models", "--server", f"llm-proxy://{proxy.address}")
    assert status == 9
    assert err.startswith(
        f"llm-proxy: error: the certificate of the server at {proxy.address} is not trusted"
    )
    assert "--ca-bundle or LLM_PROXY_CA_BUNDLE" in err
    assert len(err.splitlines()) == 1, err


async def test_hints_name_the_program_as_it_was_run(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"auth": {"enabled": True, "secret": SECRET}})
    url = f"llm-proxy+insecure://{proxy.address}"
    token = sign(claims("hinted"))

    _, _, as_script = await run(
        SCRIPT, "prompt", "hi", "-m", "nope", "--server", url, "--token", token
    )
    _, _, as_module = await run(
        *PROXY_CLI, "prompt", "hi", "-m", "nope", "--server", url, "--token", token
    )
    _, _, no_token = await run(SCRIPT, "models", "--server", url)

    assert f"`{SCRIPT} models`" in as_script
    assert "-m infrastructure.cli models`" in as_module
    # Without a token, the error says where tokens come from.
    assert f"`{SCRIPT} token issue --subject NAME`" in no_token
    assert "dev-token" in no_token


async def test_health_takes_a_server_url_like_the_other_commands(
    start_proxy: ProxyFactory, tmp_path: Path, proxy: Proxy
) -> None:
    secured, pki = await tls_proxy(start_proxy, tmp_path)

    plain = await run(SCRIPT, "health", "--server", f"llm-proxy+insecure://{proxy.address}")
    tls = await run(
        SCRIPT,
        "health",
        "--server",
        f"llm-proxy://{secured.address}",
        env={"LLM_PROXY_CA_BUNDLE": str(pki.ca)},
    )
    both = await run(SCRIPT, "health", "--server", "llm-proxy://h:1", "--address", "h:1")

    assert plain[:2] == (0, f"{proxy.address}: SERVING\n")
    assert tls[:2] == (0, f"{secured.address}: SERVING\n")
    assert both[0] == 2
    assert "give --server or --address, not both" in both[2]


async def test_the_plugin_says_why_a_proxy_model_is_unknown(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy = await start_proxy({"auth": {"enabled": True, "secret": SECRET}})
    user = {"LLM_USER_PATH": str(tmp_path)}

    no_url = await run(LLM, "-m", "proxy/markov", "hi", env=user)
    restricted = await run(
        LLM,
        "-m",
        "proxy/markov",
        "hi",
        env=user
        | {
            "LLM_PROXY_URL": f"llm-proxy+insecure://{proxy.address}",
            "LLM_PROXY_TOKEN": sign(claims("echo-only", models=["echo"])),
        },
    )

    assert no_url[0] != 0
    assert "LLM_PROXY_URL, which is not set" in no_url[2]
    assert restricted[0] != 0
    assert "the token's `models` claim leaves it out" in restricted[2]
    assert "this caller may use: proxy/echo" in restricted[2]


async def test_the_plugin_keeps_grpc_log_lines_off_the_terminal(
    proxy: Proxy, tmp_path: Path
) -> None:
    status, _, err = await run(
        LLM,
        "-m",
        "proxy/echo",
        "hi",
        env={"LLM_USER_PATH": str(tmp_path), "LLM_PROXY_URL": f"llm-proxy://{proxy.address}"},
    )
    assert status != 0
    assert "does not speak TLS" in err
    assert "Handshake failed" not in err
    assert "ssl_transport_security" not in err
