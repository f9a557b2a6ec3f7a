"""The `llm` plugin against the real server: llm's Python API, the `llm` CLI in a subprocess,
and listing that degrades (quickly, with a warning) when the proxy is down."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import llm
import pytest

from llm_proxy_client import llm_plugin
from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import script
from tests.support.commands import LLM, run
from tests.support.fake_proxy import free_port


@pytest.fixture(autouse=True)
def fresh_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    llm_plugin.reset()
    yield
    llm_plugin.reset()


def point_at(monkeypatch: pytest.MonkeyPatch, proxy: Proxy) -> str:
    url = f"llm-proxy+insecure://{proxy.address}"
    monkeypatch.setenv("LLM_PROXY_URL", url)
    return url


async def test_python_api_sync_model(
    start_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy({"models": {"aliases": {"fast": "scripted"}}})
    point_at(monkeypatch, proxy)

    def run() -> dict[str, object]:
        ids = {model.model_id for model in llm.get_models()}
        model = llm.get_model("proxy/fast")
        streamed = model.prompt(
            script(chunks=["a", "b"], usage={"input": 3, "output": 4}, echo_system=True),
            system="sys!",
        )
        chunks = list(streamed)
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
        structured = model.prompt("describe", schema=schema, stream=False)
        return {
            "ids": ids,
            "model_id": model.model_id,
            "chunks": chunks,
            "usage": (streamed.input_tokens, streamed.output_tokens),
            "resolved": streamed.resolved_model,
            "structured": json.loads(structured.text()),
            "schema": schema,
        }

    out = await asyncio.to_thread(run)
    assert {"proxy/echo", "proxy/markov", "proxy/scripted"} <= out["ids"]  # type: ignore[operator]
    assert out["model_id"] == "proxy/scripted"
    assert out["chunks"] == ["[system: sys!]", "a", "b"]
    assert out["usage"] == (3, 4)
    assert out["resolved"] == "scripted"
    assert out["structured"] == {"schema_seen": out["schema"]}


async def test_python_api_async_model(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(monkeypatch, proxy)
    model = await asyncio.to_thread(llm.get_async_model, "proxy/scripted-a")
    response = model.prompt(script(chunks=["x", "y"], usage={"input": 1, "output": 2}))
    assert [chunk async for chunk in response] == ["x", "y"]
    assert (response.input_tokens, response.output_tokens) == (1, 2)
    unstreamed = model.prompt(script(chunks=["whole"]), stream=False)
    assert await unstreamed.text() == "whole"


async def test_python_api_surfaces_errors_as_model_errors(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at(monkeypatch, proxy)

    def run() -> None:
        llm.get_model("proxy/scripted").prompt(script(error="provider exploded")).text()

    with pytest.raises(llm.ModelError, match="provider exploded"):
        await asyncio.to_thread(run)


async def _llm_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    return await run(LLM, *args, env=env)


def _env(url: str, user_path: Path, **extra: str) -> dict[str, str]:
    return {"LLM_PROXY_URL": url, "LLM_USER_PATH": str(user_path)} | extra


async def test_llm_cli_prompts_streams_and_logs_usage(proxy: Proxy, tmp_path: Path) -> None:
    env = _env(f"llm-proxy+insecure://{proxy.address}", tmp_path / "cli-user")
    status, out, err = await _llm_cli("models", env=env)
    assert status == 0, err
    assert "llm-proxy: proxy/scripted-async (aliases: proxy/scripted-a)" in out
    prompt = script(chunks=["hello ", "from ", "proxy"], usage={"input": 5, "output": 3})
    status, out, err = await _llm_cli("-m", "proxy/scripted", prompt, env=env)
    assert status == 0, err
    assert out.strip() == "hello from proxy"
    status, out, err = await _llm_cli(
        "-m", "proxy/echo", "-s", "be nice", "hi there", "--no-stream", env=env
    )
    assert status == 0, err
    assert json.loads(out)["system"] == "be nice"
    status, out, err = await _llm_cli("logs", "-n", "2", "--json", env=env)
    assert status == 0, err
    logged = json.loads(out)
    scripted = next(entry for entry in logged if entry["model"] == "proxy/scripted")
    assert (scripted["input_tokens"], scripted["output_tokens"]) == (5, 3)
    assert scripted["resolved_model"] == "scripted"


async def test_llm_cli_reports_proxy_errors(proxy: Proxy, tmp_path: Path) -> None:
    env = _env(f"llm-proxy+insecure://{proxy.address}", tmp_path / "cli-user")
    status, _, err = await _llm_cli("-m", "proxy/scripted", script(error="kaboom"), env=env)
    assert status != 0
    assert "kaboom" in err
    assert "Traceback" not in err


async def test_llm_cli_listing_degrades_when_the_proxy_is_down(tmp_path: Path) -> None:
    env = _env(f"llm-proxy+insecure://127.0.0.1:{free_port()}", tmp_path / "cli-user")
    began = time.monotonic()
    status, out, err = await _llm_cli("models", env=env)
    assert status == 0
    assert "echo" in out
    assert "proxy/" not in out
    assert "cannot list models" in err
    assert "server is running" in err
    assert "Traceback" not in err
    assert time.monotonic() - began < 15
    status, out, err = await _llm_cli("-m", "echo", "still works", env=env)
    assert status == 0, err
    assert "still works" in out


async def test_llm_cli_listing_is_bounded_when_the_proxy_never_answers(tmp_path: Path) -> None:
    # A listener that accepts TCP connections but never speaks HTTP/2: only the timeout ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env = _env(
            f"llm-proxy+insecure://127.0.0.1:{port}",
            tmp_path / "cli-user",
            LLM_PROXY_LIST_TIMEOUT="1",
        )
        began = time.monotonic()
        status, _out, err = await _llm_cli("models", env=env)
    assert status == 0, err
    assert "cannot list models" in err
    assert time.monotonic() - began < 10


def test_python_api_listing_degrades_when_the_proxy_is_down(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLM_PROXY_URL", f"llm-proxy+insecure://127.0.0.1:{free_port()}")
    began = time.monotonic()
    ids = {model.model_id for model in llm.get_models()}
    again = {model.model_id for model in llm.get_models()}
    assert time.monotonic() - began < 5
    assert "echo" in ids
    assert not any(model_id.startswith("proxy/") for model_id in ids | again)
    err = capsys.readouterr().err
    assert err.count("cannot list models") == 1  # warned once, then the failure is cached
    with pytest.raises(llm.UnknownModelError):
        llm.get_model("proxy/echo")


def test_without_a_url_the_plugin_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_PROXY_URL", raising=False)
    assert not any(m.model_id.startswith("proxy/") for m in llm.get_models())
