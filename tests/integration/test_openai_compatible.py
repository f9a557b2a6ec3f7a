"""The path most deployments take: llm's OpenAI-compatible models.

They are configured the way llm configures them (extra-openai-models.yaml in the llm user
directory) and pointed at a stand-in server on loopback."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import collect, kinds, request
from tests.support.openai_standin import StandIn, llm_user_dir, running_standin

WORDS = ["Hello", " from", " the", " stand-in", "."]


@pytest.fixture(autouse=True)
async def collect_clients_in_this_loop() -> AsyncIterator[None]:
    """llm's async OpenAI model makes an HTTP client per call, which can outlive the call in a
    reference cycle. Collected in a later test, its close() would be scheduled on this test's
    closed loop and logged as an asyncio ERROR there; collected here, it closes cleanly."""
    yield
    gc.collect()
    await asyncio.sleep(0.05)


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    with running_standin(WORDS) as state:
        user_dir = llm_user_dir(
            tmp_path / "llm-user",
            {
                "model_id": "local-gpt",
                "model_name": "stand-in-model",
                "api_base": state.api_base,
                "aliases": ["lg"],
                "supports_tools": True,
            },
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


async def test_options_reach_the_upstream_api_and_bad_ones_are_refused_before_it(
    standin: StandIn, start_proxy: ProxyFactory
) -> None:
    proxy = await start_proxy({"models": {"serve": ["local-gpt"]}})
    message = request("hi", model="local-gpt")
    message.options.update({"temperature": "0.2", "max_tokens": "50", "stop": '"END"'})

    reply = await proxy.stub.Execute(message)

    assert reply.WhichOneof("result") == "success", reply.error.error_message
    sent = standin.requests[-1]
    assert (sent["temperature"], sent["max_tokens"], sent["stop"]) == (0.2, 50, "END")
    calls_before = len(standin.requests)
    bad = request("hi", model="local-gpt")
    bad.options.update({"temperature": '"very hot"', "api_key": '"sk-x"'})
    refused = await proxy.stub.Execute(bad)
    assert refused.error.error_code == "INVALID_OPTIONS"
    assert "temperature: Input should be a valid number" in refused.error.error_message
    assert "api_key: Extra inputs are not permitted" in refused.error.error_message
    assert "max_tokens (integer)" in refused.error.error_message
    assert len(standin.requests) == calls_before


ADD = pb.ToolDefinition(
    name="add",
    description="Adds two integers",
    input_schema=json.dumps(
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    ),
)


async def test_a_tool_call_round_trip_through_the_openai_api(
    standin: StandIn, start_proxy: ProxyFactory
) -> None:
    standin.tool_calls = [("add", {"a": 2, "b": 3})]
    proxy = await start_proxy({"models": {"serve": ["local-gpt"]}})
    question = pb.ChatMessage(role=pb.ROLE_USER, parts=[pb.MessagePart(text="What is 2 + 3?")])

    first = await proxy.stub.Execute(
        pb.ExecuteRequest(messages=[question], tools=[ADD], model_name="local-gpt")
    )

    assert first.WhichOneof("result") == "success", first.error.error_message
    assert first.success.finish_reason == "tool_calls"
    (asked,) = first.success.tool_calls
    assert (asked.call_id, asked.name, json.loads(asked.arguments)) == (
        "call_0",
        "add",
        {"a": 2, "b": 3},
    )
    offered = standin.requests[-1]["tools"]
    assert offered[0]["function"]["name"] == "add"
    assert offered[0]["function"]["parameters"]["properties"]["a"] == {"type": "integer"}

    result = pb.ToolResult(call_id=asked.call_id, name="add", output="5")
    second = await proxy.stub.Execute(
        pb.ExecuteRequest(
            messages=[
                question,
                pb.ChatMessage(role=pb.ROLE_ASSISTANT, parts=[pb.MessagePart(tool_call=asked)]),
                pb.ChatMessage(role=pb.ROLE_TOOL, parts=[pb.MessagePart(tool_result=result)]),
            ],
            tools=[ADD],
            model_name="local-gpt",
        )
    )

    assert second.success.finish_reason == "stop"
    assert second.success.response_text == "".join(WORDS)
    sent = standin.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[0]["content"] == "What is 2 + 3?"
    assert sent[1]["tool_calls"][0]["id"] == "call_0"
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 2, "b": 3}
    assert (sent[2]["tool_call_id"], sent[2]["content"]) == ("call_0", "5")


async def test_streamed_tool_calls_through_the_openai_api(
    standin: StandIn, start_proxy: ProxyFactory
) -> None:
    standin.tool_calls = [("add", {"a": 1, "b": 1}), ("add", {"a": 7, "b": 8})]
    proxy = await start_proxy({"models": {"serve": ["local-gpt"]}})

    chunks = await collect(
        proxy.stub.StreamExecute(
            pb.ExecuteRequest(user_fragments=["add twice"], tools=[ADD], model_name="local-gpt")
        )
    )

    assert kinds(chunks) == ["tool_call", "tool_call", "final_metrics", "complete"]
    assert [json.loads(c.tool_call.arguments) for c in chunks[:2]] == [
        {"a": 1, "b": 1},
        {"a": 7, "b": 8},
    ]
    assert [c.tool_call.call_id for c in chunks[:2]] == ["call_0", "call_1"]
    assert chunks[-1].complete.finish_reason == "tool_calls"
    assert standin.requests[-1]["stream"] is True
