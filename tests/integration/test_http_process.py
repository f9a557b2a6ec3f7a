"""The HTTP API as operators and other tools see it: a real `serve` process, and llm itself."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import script
from tests.integration.test_lifecycle import spawn, write_config
from tests.support.commands import LLM, run
from tests.support.openai_standin import llm_user_dir

pytestmark = pytest.mark.slow

__all__ = ["spawn"]

HTTP_LINE = r"OpenAI-compatible HTTP API on http://[\d.]+:(\d+)/v1"


async def test_sigterm_lets_an_open_http_stream_finish_and_refuses_new_requests(
    tmp_path: Path, spawn: Any
) -> None:
    server = spawn(write_config(tmp_path / "proxy.yaml", grace=10, extra="http:\n  port: 0\n"))
    port = int(server.wait_for(HTTP_LINE).group(1))
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    chunks = [f"c{i} " for i in range(10)]
    body = {
        "model": "scripted",
        "messages": [{"role": "user", "content": script(chunks=chunks, delay=0.1)}],
        "stream": True,
    }
    async with (
        httpx.AsyncClient(timeout=20) as client,
        client.stream("POST", url, json=body) as response,
    ):
        lines = response.aiter_lines()
        events = []
        async for line in lines:
            if line:
                events.append(line)
            if "c0 " in line:
                break
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(timeout=5) as other:
            late = await other.post(
                url, json={"model": "echo", "messages": [{"role": "user", "content": "x"}]}
            )
            ready = await other.get(f"http://127.0.0.1:{port}/readyz")
        events += [line async for line in lines if line]
    assert late.status_code == 503
    assert ready.status_code == 503
    assert events[-1] == "data: [DONE]"
    text = "".join(
        each["choices"][0]["delta"].get("content") or ""
        for each in (httpx.Response(200, content=e[6:]).json() for e in events[:-1])
        if each["choices"]
    )
    assert text == "".join(chunks)
    assert server.process.wait(timeout=15) == 0


async def test_llm_reaches_a_model_through_the_proxy_as_an_openai_compatible_model(
    tmp_path: Path, start_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy({"http": {"enabled": True, "port": 0}, "models": {"serve": ["echo"]}})
    assert proxy.running.http is not None
    user_dir = llm_user_dir(
        tmp_path / "llm-user",
        {
            "model_id": "via-proxy",
            "model_name": "echo",
            "api_base": f"http://127.0.0.1:{proxy.running.http.port}/v1",
        },
    )
    env = {"LLM_USER_PATH": str(user_dir), "OPENAI_API_KEY": "unused"}

    async def llm(*args: str) -> str:
        status, out, err = await run(LLM, *args, env=env)
        assert status == 0, err
        return out

    streamed = await llm("-m", "via-proxy", "hello through two proxies", "-s", "be brief")
    whole = await llm("-m", "via-proxy", "--no-stream", "and once more")

    assert '"prompt": "hello through two proxies"' in streamed
    assert '"system": "be brief"' in streamed
    assert '"prompt": "and once more"' in whole
