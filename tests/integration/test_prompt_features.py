"""Everything a prompt carries, end to end over real gRPC: options, conversations, attachments
and tools, and the capabilities GetServerInfo lists for them.

llm-echo answers with what it was given (prompt, system, options, attachments, the previous
turns of its conversation, tool results) and calls tools on request; the scripted model
reports llm's prompt.messages. Refusals are checked on both sides: what the client is told,
and the server's books (one request record, in-flight back to zero, no ERROR line).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import collect, kinds, script
from tests.integration.test_refusals import (
    METHODS,
    Books,
    Refusal,
    assert_recorded_once,
    call,
)

BOOKKEEPING: dict[str, Any] = {"metrics": {"enabled": True, "port": 0}}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
ADD = pb.ToolDefinition(
    name="add",
    description="Adds two integers",
    input_schema=json.dumps(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        }
    ),
)


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def text(value: str) -> pb.MessagePart:
    return pb.MessagePart(text=value)


def turn(role: pb.Role.ValueType, *parts: pb.MessagePart) -> pb.ChatMessage:
    return pb.ChatMessage(role=role, parts=list(parts))


async def answer_of(proxy: Proxy, message: pb.ExecuteRequest) -> pb.ExecuteSuccess:
    reply = await proxy.stub.Execute(message)
    assert reply.WhichOneof("result") == "success", reply
    return reply.success


async def echoed(proxy: Proxy, message: pb.ExecuteRequest) -> dict[str, Any]:
    seen: dict[str, Any] = json.loads((await answer_of(proxy, message)).response_text)
    return seen


async def streamed(proxy: Proxy, message: pb.ExecuteRequest) -> list[pb.StreamChunk]:
    return await collect(proxy.stub.StreamExecute(message))


# --------------------------------------------------------------------------- options


async def test_options_reach_the_model_whole_and_streamed(proxy: Proxy) -> None:
    message = pb.ExecuteRequest(
        user_fragments=["hi"], model_name="echo", options={"example_bool": "true"}
    )

    whole = await echoed(proxy, message)
    chunks = await streamed(proxy, message)

    assert whole["options"] == {"example_bool": True}
    assert json.loads("".join(c.text_chunk for c in chunks if c.text_chunk))["options"] == {
        "example_bool": True
    }


async def test_an_option_of_the_wrong_type_is_converted_or_refused_by_the_model(
    proxy: Proxy,
) -> None:
    three = await answer_of(
        proxy,
        pb.ExecuteRequest(
            user_fragments=["a b c d"], model_name="markov", options={"length": '"3"'}
        ),
    )
    assert len(three.response_text.split()) == 3


@pytest.mark.parametrize("method", METHODS)
async def test_bad_options_are_refused_with_the_valid_ones(
    start_proxy: ProxyFactory, capture: pytest.LogCaptureFixture, method: str
) -> None:
    proxy = await start_proxy(BOOKKEEPING)
    books = Books(proxy, capture)
    rid = f"bad-options-{method}"
    message = pb.ExecuteRequest(
        user_fragments=["hi"],
        model_name="echo",
        request_id=rid,
        options={"temperature": "0.2", "key": '"sk-from-a-client"'},
    )

    await assert_recorded_once(
        books,
        method,
        "INVALID_OPTIONS",
        lambda: call(proxy, method, message),
        Refusal(None, "INVALID_OPTIONS"),
        request_id=rid,
        model="echo",
    )
    reply = await proxy.stub.Execute(message)
    error = reply.error.error_message
    assert "temperature: Extra inputs are not permitted" in error
    assert "key: Extra inputs are not permitted" in error
    assert "Its options: example_bool (boolean), thinking (boolean)" in error
    assert "sk-from-a-client" not in error


# --------------------------------------------------------------------------- conversations


CONVERSATION = [
    turn(pb.ROLE_SYSTEM, text("You do arithmetic.")),
    turn(pb.ROLE_USER, text("What is 2 + 2?")),
    turn(pb.ROLE_ASSISTANT, text("4")),
    turn(pb.ROLE_USER, text("And times 3?")),
    turn(pb.ROLE_ASSISTANT, text("12")),
]


async def test_a_three_turn_conversation_reaches_the_model_in_order(proxy: Proxy) -> None:
    message = pb.ExecuteRequest(
        messages=[*CONVERSATION, turn(pb.ROLE_USER, text("Minus 5?"))], model_name="echo"
    )

    seen = await echoed(proxy, message)

    assert seen["prompt"] == "Minus 5?"
    assert seen["system"] == "You do arithmetic."
    assert seen["previous"] == [{"prompt": "What is 2 + 2?"}, {"prompt": "And times 3?"}]


async def test_the_conversation_is_what_prompt_messages_holds(proxy: Proxy) -> None:
    final = script(echo_messages=True)
    message = pb.ExecuteRequest(
        messages=CONVERSATION, user_fragments=[final], model_name="scripted-async"
    )

    messages = json.loads((await answer_of(proxy, message)).response_text)

    assert [(m["role"], m["parts"][0]["text"]) for m in messages] == [
        ("system", "You do arithmetic."),
        ("user", "What is 2 + 2?"),
        ("assistant", "4"),
        ("user", "And times 3?"),
        ("assistant", "12"),
        ("user", final),
    ]


async def test_a_conversation_must_end_with_something_to_answer(proxy: Proxy) -> None:
    reply = await proxy.stub.Execute(pb.ExecuteRequest(messages=CONVERSATION, model_name="echo"))

    assert reply.error.error_code == "EMPTY_REQUEST"
    assert "ends with a assistant message" in reply.error.error_message


# --------------------------------------------------------------------------- attachments


def png_attachment(size: int = 0) -> pb.Attachment:
    return pb.Attachment(media_type="image/png", content=PNG if not size else b"p" * size)


async def test_an_image_attachment_by_bytes_reaches_the_model(proxy: Proxy) -> None:
    as_field = pb.ExecuteRequest(
        user_fragments=["What is in this image?"],
        attachments=[png_attachment()],
        model_name="echo",
    )
    as_part = pb.ExecuteRequest(
        messages=[
            turn(
                pb.ROLE_USER,
                text("What is in this image?"),
                pb.MessagePart(attachment=png_attachment()),
            )
        ],
        model_name="echo",
    )

    for message in (as_field, as_part):
        seen = await echoed(proxy, message)
        assert seen["prompt"] == "What is in this image?"
        assert seen["attachments"] == [
            {"type": "image/png", "path": None, "url": None, "id": hashlib.sha256(PNG).hexdigest()}
        ]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("attachments", "outcome", "hint"),
    [
        ([png_attachment(600)], "ATTACHMENTS_TOO_LARGE", "600 bytes"),
        ([png_attachment(1)] * 3, "ATTACHMENTS_TOO_LARGE", "3 attachments"),
        (
            [pb.Attachment(media_type="image/png", url="/etc/passwd")],
            "INVALID_ATTACHMENT",
            "never reads a file path",
        ),
        (
            [pb.Attachment(media_type="image/png", url="file:///etc/passwd")],
            "INVALID_ATTACHMENT",
            "never reads a file path",
        ),
        (
            [pb.Attachment(media_type="image/png", url="https://example.com/cat.png")],
            "INVALID_ATTACHMENT",
            "limits.allow_attachment_urls",
        ),
        (
            [pb.Attachment(media_type="application/pdf", content=b"%PDF")],
            "INVALID_ATTACHMENT",
            "accepts image/gif, image/jpeg, image/png",
        ),
    ],
    ids=["too-big", "too-many", "path", "file-url", "url-off", "media-type"],
)
async def test_attachments_the_server_will_not_take_are_refused_before_the_model(
    start_proxy: ProxyFactory,
    capture: pytest.LogCaptureFixture,
    method: str,
    attachments: Sequence[pb.Attachment],
    outcome: str,
    hint: str,
) -> None:
    proxy = await start_proxy(
        {**BOOKKEEPING, "limits": {"max_attachment_bytes": 500, "max_attachments": 2}}
    )
    books = Books(proxy, capture)
    rid = f"att-{method}-{outcome}-{hint[:8]}"
    message = pb.ExecuteRequest(
        user_fragments=["look"], attachments=list(attachments), model_name="echo", request_id=rid
    )

    await assert_recorded_once(
        books,
        method,
        outcome,
        lambda: call(proxy, method, message),
        Refusal(None, outcome),
        request_id=rid,
        model="echo",
    )
    assert hint in (await proxy.stub.Execute(message)).error.error_message


async def test_https_attachment_urls_pass_when_the_operator_allows_them(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy({"limits": {"allow_attachment_urls": True}})
    url = "https://images.example/cat.jpg"
    message = pb.ExecuteRequest(
        user_fragments=["and this?"],
        attachments=[pb.Attachment(media_type="image/jpeg", url=url)],
        model_name="echo",
    )

    (attachment,) = (await echoed(proxy, message))["attachments"]

    # llm-echo does not fetch; a real plugin would, which is why this is off by default.
    assert (attachment["type"], attachment["url"]) == ("image/jpeg", url)


async def test_a_model_without_attachments_or_tools_says_which_models_have_them(
    proxy: Proxy,
) -> None:
    attached = await proxy.stub.Execute(
        pb.ExecuteRequest(user_fragments=["x"], attachments=[png_attachment()], model_name="markov")
    )
    tooled = await proxy.stub.Execute(
        pb.ExecuteRequest(user_fragments=["x"], tools=[ADD], model_name="markov")
    )

    assert attached.error.error_code == tooled.error.error_code == "UNSUPPORTED_BY_MODEL"
    assert attached.error.error_message.endswith("Served models that do: echo")
    assert tooled.error.error_message == (
        "model 'markov' cannot call tools. Served models that can: echo"
    )


# --------------------------------------------------------------------------- tools


def add(a: int, b: int) -> int:
    """The client's own implementation of the tool; the server never sees it."""
    return a + b


def asks_for_add(a: int, b: int) -> str:
    """An llm-echo prompt that makes it ask for the add tool."""
    return json.dumps(
        {
            "prompt": f"what is {a} + {b}?",
            "tool_calls": [{"name": "add", "arguments": {"a": a, "b": b}}],
        }
    )


async def test_a_tool_call_round_trip(proxy: Proxy) -> None:
    question = turn(pb.ROLE_USER, text(asks_for_add(2, 3)))
    first = await answer_of(
        proxy, pb.ExecuteRequest(messages=[question], tools=[ADD], model_name="echo")
    )

    assert first.finish_reason == "tool_calls"
    (asked,) = first.tool_calls
    assert asked.name == "add" and asked.call_id
    arguments = json.loads(asked.arguments)
    assert arguments == {"a": 2, "b": 3}

    # The client runs the tool and sends its result with the conversation so far.
    result = pb.ToolResult(call_id=asked.call_id, name=asked.name, output=str(add(**arguments)))
    second = await answer_of(
        proxy,
        pb.ExecuteRequest(
            messages=[
                question,
                turn(pb.ROLE_ASSISTANT, pb.MessagePart(tool_call=asked)),
                turn(pb.ROLE_TOOL, pb.MessagePart(tool_result=result)),
            ],
            tools=[ADD],
            model_name="echo",
        ),
    )

    assert second.finish_reason == "stop"
    assert list(second.tool_calls) == []
    final = json.loads(second.response_text)
    assert final["tool_results"] == [{"name": "add", "output": "5", "tool_call_id": asked.call_id}]
    assert final["previous"] == [{"prompt": asks_for_add(2, 3)}]


async def test_tool_calls_are_streamed_as_their_own_chunks(proxy: Proxy) -> None:
    chunks = await streamed(
        proxy,
        pb.ExecuteRequest(user_fragments=[asks_for_add(4, 5)], tools=[ADD], model_name="echo"),
    )

    shape = kinds(chunks)
    assert shape[-3:] == ["tool_call", "final_metrics", "complete"]
    assert set(shape[:-3]) == {"text_chunk"}
    tool_call = chunks[-3].tool_call
    assert (tool_call.name, json.loads(tool_call.arguments)) == ("add", {"a": 4, "b": 5})
    assert tool_call.call_id
    assert chunks[-1].complete.finish_reason == "tool_calls"
    assert chunks[-1].complete.actual_model_used == "echo"


async def test_a_plain_stream_finishes_with_stop(proxy: Proxy) -> None:
    chunks = await streamed(proxy, pb.ExecuteRequest(user_fragments=["hi"], model_name="echo"))

    assert chunks[-1].complete.finish_reason == "stop"
    assert "tool_call" not in kinds(chunks)


# --------------------------------------------------------------------------- capabilities


async def test_server_info_lists_each_models_capabilities_and_options(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy({"limits": {"max_attachments": 4, "max_attachment_bytes": 1000}})

    info = await proxy.stub.GetServerInfo(pb.GetServerInfoRequest())

    models = {model.model_id: model for model in info.available_models}
    echo, markov, scripted = models["echo"], models["markov"], models["scripted"]
    assert (echo.supports_tools, echo.supports_async, echo.supports_conversation) == (
        True,
        True,
        True,
    )
    assert list(echo.attachment_types) == ["image/gif", "image/jpeg", "image/png"]
    assert [(o.name, o.type, o.description) for o in echo.options] == [
        ("example_bool", "boolean", "Example boolean option"),
        ("thinking", "boolean", "If set, emit canned reasoning chunks before the response"),
    ]
    assert json.loads(echo.options[0].json_schema)["anyOf"][0] == {"type": "boolean"}
    assert (markov.supports_tools, markov.supports_async) == (False, False)
    assert [o.name for o in markov.options] == ["length", "delay"]
    assert list(markov.attachment_types) == []
    assert scripted.supports_schema and not echo.supports_schema
    assert (info.limits.max_attachments, info.limits.max_attachment_bytes) == (4, 1000)
    assert info.limits.allow_attachment_urls is False


# --------------------------------------------------------------------------- records


async def test_request_lines_say_how_the_answer_went_and_over_which_transport(
    proxy: Proxy, capture: pytest.LogCaptureFixture
) -> None:
    await proxy.stub.Execute(pb.ExecuteRequest(user_fragments=["hi"], request_id="how-1"))
    await streamed(proxy, pb.ExecuteRequest(user_fragments=["hi"], request_id="how-2"))

    lines = {
        record.fields["request_id"]: record  # type: ignore[attr-defined]
        for record in capture.records
        if record.name == "llm_proxy.requests"
    }
    for request_id, method in (("how-1", "unary"), ("how-2", "stream")):
        fields = lines[request_id].fields  # type: ignore[attr-defined]
        assert (fields["method"], fields["transport"]) == (method, "grpc")
        assert f"method={method} transport=grpc" in lines[request_id].getMessage()
