"""The path most deployments take: llm's OpenAI-compatible models.

They are configured the way llm configures them (extra-openai-models.yaml in the llm user
directory) and pointed at a stand-in server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import collect, kinds, request
from tests.support.openai_standin import StandIn, running_standin

WORDS = ["Hello", " from", " the", " stand-in", "."]


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    with running_standin(WORDS) as state:
        user_dir = tmp_path / "llm-user"
        user_dir.mkdir()
        (user_dir / "extra-openai-models.yaml").write_text(
            yaml.safe_dump(
                [
                    {
                        "model_id": "local-gpt",
                        "model_name": "stand-in-model",
                        "api_base": state.api_base,
                        "aliases": ["lg"],
                    }
                ]
            )
        )
        monkeypatch.setenv("LLM_USER_PATH", str(user_dir))
        yield state


async def test_unary_through_openai_compatible_model(
    standin: StandIn, start_proxy: ProxyFactory
) -> None:
    proxy = await start_proxy({"models": {"serve": ["local-gpt", "echo"]}})
    reply = await proxy.stub.Execute(request("say hi", model="lg", system=("be kind",)))
    assert reply.WhichOneof("result") == "success", reply.error.error_message
    assert reply.success.response_text == "".join(WORDS)
    assert reply.success.actual_model_used == "local-gpt"
    assert reply.success.metrics.input_tokens == 7
    assert reply.success.metrics.output_tokens == len(WORDS)
    sent = standin.requests[-1]
    assert sent["model"] == "stand-in-model"
    assert {"role": "system", "content": "be kind"} in sent["messages"]
    assert any(m["role"] == "user" and "say hi" in str(m["content"]) for m in sent["messages"])


async def test_streaming_through_openai_compatible_model(
    standin: StandIn, start_proxy: ProxyFactory
) -> None:
    proxy = await start_proxy({"models": {"serve": ["local-gpt"]}})
    chunks = await collect(proxy.stub.StreamExecute(request("stream please", model="local-gpt")))
    assert kinds(chunks) == ["text_chunk"] * len(WORDS) + ["final_metrics", "complete"]
    assert [c.text_chunk for c in chunks[: len(WORDS)]] == WORDS
    metrics = chunks[len(WORDS)].final_metrics
    assert (metrics.input_tokens, metrics.output_tokens) == (7, len(WORDS))
    assert standin.requests[-1]["stream"] is True


async def test_unreachable_openai_endpoint_is_an_upstream_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_proxy: ProxyFactory
) -> None:
    user_dir = tmp_path / "llm-user"
    user_dir.mkdir()
    (user_dir / "extra-openai-models.yaml").write_text(
        yaml.safe_dump(
            [{"model_id": "dead-gpt", "model_name": "x", "api_base": "http://127.0.0.1:9/v1"}]
        )
    )
    monkeypatch.setenv("LLM_USER_PATH", str(user_dir))
    proxy = await start_proxy({"models": {"serve": ["dead-gpt"]}})
    reply = await proxy.stub.Execute(request("hi", model="dead-gpt"), timeout=60)
    assert reply.error.error_code in ("UPSTREAM_ERROR", "TIMEOUT")
    assert "dead-gpt" in reply.error.error_message
