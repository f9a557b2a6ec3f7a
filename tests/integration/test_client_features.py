"""The client's messages, options, attachments and tools against the real server and llm-echo
(which answers with what it was given and calls tools on request), sync and asyncio."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest

from llm_proxy_client import (
    AsyncProxyClient,
    Attachment,
    ExecuteResult,
    InvalidRequestError,
    Message,
    ProxyClient,
    Tool,
    ToolCall,
    ToolResult,
)
from tests.integration.conftest import Proxy

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
ADD = Tool(
    name="add",
    description="Adds two integers",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


def add(a: int, b: int) -> int:
    """The client's own implementation of the tool; the server never sees it."""
    return a + b


def asks_for_add(a: int, b: int) -> str:
    # llm-echo calls the tools a JSON prompt lists.
    return json.dumps(
        {"prompt": "add these", "tool_calls": [{"name": "add", "arguments": {"a": a, "b": b}}]}
    )


def seen(result: ExecuteResult) -> dict[str, Any]:
    echoed: dict[str, Any] = json.loads(result.text)
    return echoed


def url(proxy: Proxy) -> str:
    return f"llm-proxy+insecure://{proxy.address}"


async def test_the_old_call_form_still_works(proxy: Proxy) -> None:
    async with AsyncProxyClient(url(proxy)) as client:
        result = await client.execute("plain", model="echo", system="sys")
    assert seen(result)["prompt"] == "plain"
    assert seen(result)["system"] == "sys"
    assert result.finish_reason == "stop"
    assert result.tool_calls == ()


async def test_options_and_a_conversation_reach_the_model(proxy: Proxy) -> None:
    history = [
        Message.system("You do arithmetic."),
        Message.user("What is 2 + 2?"),
        Message.assistant("4"),
    ]
    async with AsyncProxyClient(url(proxy)) as client:
        result = await client.execute(
            "And times 3?", model="echo", messages=history, options={"example_bool": True}
        )
    echoed = seen(result)
    assert echoed["options"] == {"example_bool": True}
    assert echoed["prompt"] == "And times 3?"
    assert echoed["system"] == "You do arithmetic."
    assert echoed["previous"] == [{"prompt": "What is 2 + 2?"}]


async def test_bad_options_are_refused_with_the_valid_ones(proxy: Proxy) -> None:
    async with AsyncProxyClient(url(proxy)) as client:
        with pytest.raises(InvalidRequestError) as refused:
            await client.execute("hi", model="echo", options={"temperature": 0.2})
    assert refused.value.code == "INVALID_OPTIONS"
    assert "example_bool (boolean)" in str(refused.value)


async def test_an_image_attachment_by_bytes(proxy: Proxy, tmp_path: Any) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(PNG)
    expected = [
        {"type": "image/png", "path": None, "url": None, "id": hashlib.sha256(PNG).hexdigest()}
    ]
    async with AsyncProxyClient(url(proxy)) as client:
        as_argument = await client.execute(
            "What is this?", model="echo", attachments=[Attachment.from_path(image)]
        )
        in_a_message = await client.execute(
            model="echo", messages=[Message.user("What is this?", Attachment("image/png", PNG))]
        )
    for result in (as_argument, in_a_message):
        assert seen(result)["attachments"] == expected
        assert seen(result)["prompt"] == "What is this?"


async def test_a_tool_round_trip_with_the_blocking_client(proxy: Proxy) -> None:
    question = Message.user(asks_for_add(2, 3))

    def run() -> tuple[ToolCall, ExecuteResult, ExecuteResult]:
        with ProxyClient(url(proxy)) as client:
            return round_trip(client)

    def round_trip(client: ProxyClient) -> tuple[ToolCall, ExecuteResult, ExecuteResult]:
        first = client.execute(model="echo", messages=[question], tools=[ADD])
        (call,) = first.tool_calls
        output = str(add(**call.arguments))  # type: ignore[arg-type]
        final = client.execute(
            model="echo",
            messages=[
                question,
                first.as_message(),
                Message.tool(ToolResult(call.call_id, call.name, output)),
            ],
            tools=[ADD],
        )
        return call, first, final

    call, first, final = await asyncio.to_thread(run)
    assert first.finish_reason == "tool_calls"
    assert (call.name, dict(call.arguments)) == ("add", {"a": 2, "b": 3})
    assert call.call_id
    assert final.finish_reason == "stop"
    assert final.tool_calls == ()
    assert seen(final)["tool_results"] == [
        {"name": "add", "output": "5", "tool_call_id": call.call_id}
    ]


async def test_streamed_tool_calls_with_the_asyncio_client(proxy: Proxy) -> None:
    async with AsyncProxyClient(url(proxy)) as client:
        stream = client.stream(asks_for_add(4, 5), model="echo", tools=[ADD])
        text = "".join([chunk async for chunk in stream])
        result = await stream.result()
    assert json.loads(text)["prompt"] == "add these"
    assert result.finish_reason == "tool_calls"
    assert [(c.name, dict(c.arguments)) for c in result.tool_calls] == [("add", {"a": 4, "b": 5})]


async def test_capabilities_are_listed(proxy: Proxy) -> None:
    async with AsyncProxyClient(url(proxy)) as client:
        info = await client.server_info()
    echo = info.model("echo")
    assert echo is not None
    assert echo.supports_tools and echo.supports_conversation
    assert "image/png" in echo.attachment_types
    assert {o.name: o.type for o in echo.options} == {
        "example_bool": "boolean",
        "thinking": "boolean",
    }
    assert info.limits.max_attachment_bytes > 0
