"""OpenAI chat completion bodies mapped onto the transport-neutral request, and answers back."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from adapters.http.answers import ChunkWriter, completion
from adapters.http.chat import chat_request
from adapters.http.embeddings import embeddings_answer, embeddings_call
from adapters.http.errors import RequestTooLarge, error_response_parts, status_of
from domain.answer import Answer, FinishReason, StreamFinished
from domain.embedding import Embeddings
from domain.errors import (
    AuthenticationFailed,
    BudgetExhausted,
    InputTooLong,
    LimitsUnavailable,
    ModelUnavailable,
    PermissionDenied,
    RateLimited,
    UnknownModel,
    UpstreamFailure,
    UpstreamTimeout,
)
from domain.request import Attachment, Role, Text, ToolCall, ToolResult
from domain.usage import ExecutionMetrics, Usage


def body(**fields: Any) -> bytes:
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return json.dumps(fields).encode()


def test_a_conversation_with_tools_maps_every_part() -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    chat = chat_request(
        body(
            model="echo",
            temperature=0.2,
            max_completion_tokens=50,
            user="u-1",
            stream=True,
            stream_options={"include_usage": True},
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ],
            messages=[
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "done"},
            ],
        ),
        "rid",
    )
    prompt = chat.prompt
    assert prompt.rejection is None
    assert (chat.stream, chat.include_usage, chat.user) == (True, True, "u-1")
    assert prompt.options == {"temperature": 0.2, "max_tokens": 50}
    assert [m.role for m in prompt.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL]
    assert prompt.messages[1].parts == (Text("look"), Attachment("image/png", content=b"\x89PNG"))
    assert prompt.messages[2].parts == (ToolCall("f", {"a": 1}, "c1"),)
    # The tool's name comes from the call it answers.
    assert prompt.messages[3].parts == (ToolResult("c1", "f", "done"),)
    assert [t.name for t in prompt.tools] == ["f"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "must be a JSON object"),
        (body(n=3), "'n' is 3"),
        (body(frequency=1), "unknown field 'frequency'"),
        (body(max_tokens=1, max_completion_tokens=2), "only one of"),
        (body(response_format={"type": "yaml"}), "not one of"),
        (body(tool_choice="required"), "tool_choice"),
        (body(stream_options={"include_usage": True}), "only allowed with 'stream': true"),
        (body(messages=[{"role": "tool", "content": "x"}]), "tool_call_id"),
        (body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]), "input_audio"),
        (body(model="a\nb"), "non-printable"),
    ],
)
def test_unusable_bodies_carry_their_rejection(raw: bytes, needle: str) -> None:
    rejection = chat_request(raw, "rid").prompt.rejection
    assert rejection is not None and needle in rejection.message


def test_tool_choice_none_sends_no_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert chat_request(body(tools=tools, tool_choice="none"), "r").prompt.tools == ()


def test_answers_in_openai_shape() -> None:
    metrics = ExecutionMetrics(duration_ms=5, timestamp=1700, usage=Usage(3, 4))
    answer = Answer(
        "rid",
        "",
        "echo",
        metrics,
        tool_calls=(ToolCall("f", {"x": 1}),),
        finish_reason=FinishReason.TOOL_CALLS,
    )
    shaped: Any = completion(answer)
    message = shaped["choices"][0]["message"]
    assert message["content"] is None and shaped["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x":1}'}
    assert message["tool_calls"][0]["id"]
    assert shaped["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}

    writer = ChunkWriter("rid", "echo", 1700)
    head, arguments = writer.tool_call(ToolCall("f", {"x": 1}, "c9")).split(b"\n\n")[:2]
    assert json.loads(head[6:])["choices"][0]["delta"]["tool_calls"][0]["id"] == "c9"
    assert json.loads(arguments[6:])["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0,
        "function": {"arguments": '{"x":1}'},
    }
    usage = json.loads(writer.usage(StreamFinished("echo", metrics))[6:])
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RequestTooLarge("big"), 413),
        (InputTooLong(10, 5), 413),
        (AuthenticationFailed("no"), 401),
        (PermissionDenied("no"), 403),
        (UnknownModel("x", ["echo"]), 404),
        (RateLimited("slow down", 2.5), 429),
        (UpstreamFailure("down"), 502),
        (ModelUnavailable("no key"), 503),
        (LimitsUnavailable("redis is down"), 503),
        (UpstreamTimeout(3), 504),
    ],
)
def test_statuses(error: Exception, status: int) -> None:
    assert status_of(error) == status  # type: ignore[arg-type]


def test_rate_limits_say_when_to_retry_in_whole_seconds() -> None:
    status, raw, headers = error_response_parts(RateLimited("slow down", 2.1))
    assert status == 429 and headers == {"retry-after": "3", "retry-after-ms": "2100"}
    assert json.loads(raw)["error"] == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limited",
    }


def test_an_exhausted_budget_tells_clients_not_to_retry() -> None:
    status, raw, headers = error_response_parts(BudgetExhausted("budget used up", 7200.0))
    assert status == 429
    assert headers == {
        "retry-after": "7200",
        "retry-after-ms": "7200000",
        "x-should-retry": "false",
    }
    assert json.loads(raw)["error"]["code"] == "budget_exhausted"
    # Passing limits are worth a retry: no such header on them.
    assert "x-should-retry" not in error_response_parts(RateLimited("slow down", 1))[2]


def test_embeddings_in_both_encodings() -> None:
    call = embeddings_call(json.dumps({"model": "te", "input": "hi"}).encode(), "r")
    assert call.request.inputs == ("hi",) and call.encoding == "float"
    result = Embeddings("r", "test-embed", ((1.0, 2.5),), Usage(1, 0))
    assert embeddings_answer(result, "float")["data"] == [
        {"object": "embedding", "index": 0, "embedding": [1.0, 2.5]}
    ]
    packed: Any = embeddings_answer(result, "base64")["data"]
    assert base64.b64decode(packed[0]["embedding"]) == b"\x00\x00\x80?\x00\x00 @"
