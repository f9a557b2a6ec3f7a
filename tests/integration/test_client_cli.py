"""`llm-proxy prompt` / `llm-proxy models` as real subprocesses against the real server."""

from __future__ import annotations

import json

from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import script
from tests.support.commands import PROXY_CLI, run


async def cli(*args: str) -> tuple[int, str, str]:
    return await run(*PROXY_CLI, *args)


def server(proxy: Proxy) -> str:
    return f"llm-proxy+insecure://{proxy.address}"


async def test_prompt_streams_an_answer(proxy: Proxy) -> None:
    status, out, err = await cli(
        "prompt",
        script(chunks=["one ", "two ", "three"], usage={"input": 2, "output": 3}),
        "--model",
        "scripted",
        "--usage",
        "--server",
        server(proxy),
    )
    assert status == 0, err
    assert out == "one two three\n"
    assert "input 2, output 3" in err


async def test_prompt_without_streaming_and_with_a_system_prompt(proxy: Proxy) -> None:
    status, out, err = await cli(
        "prompt", "hi", "-m", "echo", "-s", "be brief", "--no-stream", "--server", server(proxy)
    )
    assert status == 0, err
    assert json.loads(out)["system"] == "be brief"


async def test_models_lists_the_catalog(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"models": {"aliases": {"fast": "echo"}, "default": "echo"}})
    status, out, err = await cli("models", "--server", server(proxy))
    assert status == 0, err
    assert "* echo  (aliases: fast)" in out
    assert "scripted-async  (aliases: scripted-a)" in out


async def test_errors_from_the_real_server_have_their_exit_status(
    start_proxy: ProxyFactory,
) -> None:
    url = server(await start_proxy())
    status, out, err = await cli("prompt", "hi", "-m", "nope", "--server", url)
    assert (status, out) == (5, "")
    assert "nope" in err
    assert "Traceback" not in err
    status, _, err = await cli("prompt", script(error="kaboom"), "-m", "scripted", "--server", url)
    assert status == 8
    assert "kaboom" in err


async def test_rate_limit_exits_7_with_when_to_retry(start_proxy: ProxyFactory) -> None:
    url = server(await start_proxy({"limits": {"max_requests_per_minute": 1}}))
    status, _, err = await cli("prompt", "hi", "-m", "echo", "--server", url)
    assert status == 0, err
    status, out, err = await cli("prompt", "hi", "-m", "echo", "--server", url)
    assert (status, out) == (7, "")
    assert "Retry after" in err
