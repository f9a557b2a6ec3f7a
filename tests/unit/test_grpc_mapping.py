"""Protobuf <-> domain mapping: optional fields are absent exactly when the domain has no value."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import pytest

from adapters.grpc import mapping
from application.describe_server import ServerDescription
from domain.answer import Answer, FinishReason, StreamFinished
from domain.catalog import OptionSpec
from domain.errors import ProxyError, UnknownModel, UpstreamFailure
from domain.policy import Limits
from domain.request import (
    Attachment,
    Message,
    Role,
    Text,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from domain.usage import ExecutionMetrics, Usage
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.unit.fakes import model

INT32_MAX = 2**31 - 1

# --------------------------------------------------------------------------- requests


def test_fragments_become_a_system_and_a_user_message() -> None:
    message = pb.ExecuteRequest(user_fragments=["a", "b"], system_fragments=["s"])

    request = mapping.to_prompt_request(message)

    assert request.messages == (
        Message.of_text(Role.SYSTEM, "s"),
        Message.of_text(Role.USER, "a", "b"),
    )
    assert request.model is None
    assert request.schema is None
    assert request.options == {}
    assert request.tools == ()
    assert request.request_id == ""
    assert request.rejection is None


def test_request_with_every_original_field() -> None:
    message = pb.ExecuteRequest(
        user_fragments=["u"],
        model_name="fast",
        response_model_schema='{"type": "object"}',
        request_id="r-1",
    )

    request = mapping.to_prompt_request(message)

    assert request.model == "fast"
    assert request.schema == {"type": "object"}
    assert request.request_id == "r-1"
    assert request.messages == (Message.of_text(Role.USER, "u"),)


def test_request_with_empty_but_present_optionals() -> None:
    message = pb.ExecuteRequest(user_fragments=["u"], model_name="", response_model_schema="  ")

    request = mapping.to_prompt_request(message)

    assert request.model == ""
    # A blank schema is no schema, as it always was.
    assert request.schema is None
    assert request.rejection is None


def test_request_survives_the_wire() -> None:
    sent = pb.ExecuteRequest(user_fragments=["u"], model_name="m")
    received = pb.ExecuteRequest.FromString(sent.SerializeToString())

    assert mapping.to_prompt_request(received).model == "m"
    assert mapping.to_prompt_request(received).schema is None


def text_part(text: str) -> pb.MessagePart:
    return pb.MessagePart(text=text)


def test_messages_keep_their_order_roles_and_every_kind_of_part() -> None:
    message = pb.ExecuteRequest(
        messages=[
            pb.ChatMessage(role=pb.ROLE_SYSTEM, parts=[text_part("be brief")]),
            pb.ChatMessage(
                role=pb.ROLE_USER,
                parts=[
                    text_part("what is in this picture?"),
                    pb.MessagePart(
                        attachment=pb.Attachment(media_type="image/png", content=b"\x89PNG")
                    ),
                    pb.MessagePart(
                        attachment=pb.Attachment(
                            media_type="image/jpeg", url="https://example.com/a.jpg"
                        )
                    ),
                ],
            ),
            pb.ChatMessage(
                role=pb.ROLE_ASSISTANT,
                parts=[
                    pb.MessagePart(
                        tool_call=pb.ToolCall(
                            call_id="c1", name="zoom", arguments='{"factor": 2, "at": [1, 2]}'
                        )
                    )
                ],
            ),
            pb.ChatMessage(
                role=pb.ROLE_TOOL,
                parts=[
                    pb.MessagePart(
                        tool_result=pb.ToolResult(call_id="c1", name="zoom", output="zoomed")
                    )
                ],
            ),
        ]
    )

    request = mapping.to_prompt_request(message)

    assert request.rejection is None
    assert request.messages == (
        Message.of_text(Role.SYSTEM, "be brief"),
        Message(
            Role.USER,
            (
                Text("what is in this picture?"),
                Attachment("image/png", content=b"\x89PNG"),
                Attachment("image/jpeg", url="https://example.com/a.jpg"),
            ),
        ),
        Message(Role.ASSISTANT, (ToolCall("zoom", {"factor": 2, "at": [1, 2]}, "c1"),)),
        Message(Role.TOOL, (ToolResult("c1", "zoom", "zoomed"),)),
    )
    call = request.messages[2].parts[0]
    assert isinstance(call, ToolCall)
    assert call.arguments == {"factor": 2, "at": [1, 2]}


def test_fragments_frame_the_messages_and_attachments_join_the_last_user_turn() -> None:
    message = pb.ExecuteRequest(
        system_fragments=["sys"],
        messages=[
            pb.ChatMessage(role=pb.ROLE_USER, parts=[text_part("first")]),
            pb.ChatMessage(role=pb.ROLE_ASSISTANT, parts=[text_part("answer")]),
        ],
        user_fragments=["second"],
        attachments=[pb.Attachment(media_type="image/gif", content=b"GIF8")],
    )

    request = mapping.to_prompt_request(message)

    assert [m.role for m in request.messages] == [
        Role.SYSTEM,
        Role.USER,
        Role.ASSISTANT,
        Role.USER,
    ]
    assert request.messages[-1].parts == (Text("second"), Attachment("image/gif", b"GIF8"))


def test_attachments_without_a_user_turn_make_one() -> None:
    message = pb.ExecuteRequest(attachments=[pb.Attachment(media_type="image/gif", content=b"G")])

    request = mapping.to_prompt_request(message)

    assert request.messages == (Message(Role.USER, (Attachment("image/gif", b"G"),)),)


def test_an_attachment_without_a_source_reaches_the_domain_as_one() -> None:
    # The domain names the problem (neither bytes nor URL) for every transport alike.
    message = pb.ExecuteRequest(attachments=[pb.Attachment(media_type="image/png")])

    (only,) = mapping.to_prompt_request(message).messages[0].parts
    assert only == Attachment("image/png")


def test_options_are_parsed_from_json_text() -> None:
    message = pb.ExecuteRequest(
        user_fragments=["u"],
        options={
            "temperature": "0.2",
            "max_tokens": "100",
            "stop": '["END", "\\n"]',
            "json_mode": "true",
            "style": '"terse"',
        },
    )

    request = mapping.to_prompt_request(message)

    assert request.options == {
        "temperature": 0.2,
        "max_tokens": 100,
        "stop": ["END", "\n"],
        "json_mode": True,
        "style": "terse",
    }


def test_tools_are_parsed_and_a_blank_input_schema_means_no_arguments() -> None:
    message = pb.ExecuteRequest(
        user_fragments=["u"],
        tools=[
            pb.ToolDefinition(
                name="add",
                description="Adds two numbers",
                input_schema='{"type": "object", "properties": {"a": {"type": "integer"}}}',
            ),
            pb.ToolDefinition(name="now"),
        ],
    )

    request = mapping.to_prompt_request(message)

    assert request.tools == (
        ToolDefinition(
            "add",
            "Adds two numbers",
            {"type": "object", "properties": {"a": {"type": "integer"}}},
        ),
        ToolDefinition("now", "", {"type": "object", "properties": {}}),
    )
    assert request.tools[0].input_schema == {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
    }


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("message", "code", "hints"),
    [
        (
            pb.ExecuteRequest(user_fragments=["u"], response_model_schema="{not json"),
            "INVALID_SCHEMA",
            ("response_model_schema", "not valid JSON", "line 1 column 2"),
        ),
        (
            pb.ExecuteRequest(user_fragments=["u"], response_model_schema="[1, 2]"),
            "INVALID_SCHEMA",
            ("response_model_schema", "not a JSON list"),
        ),
        (
            pb.ExecuteRequest(user_fragments=["u"], response_model_schema='"a string"'),
            "INVALID_SCHEMA",
            ("response_model_schema", "not a JSON string"),
        ),
        (
            pb.ExecuteRequest(user_fragments=["u"], response_model_schema='{"type": 5}'),
            "INVALID_SCHEMA",
            ("response_model_schema", '"type"'),
        ),
        (
            pb.ExecuteRequest(
                user_fragments=["u"], response_model_schema='{"a": ' + deep(100) + "}"
            ),
            "INVALID_SCHEMA",
            ("response_model_schema", "deeper than 64"),
        ),
        (
            pb.ExecuteRequest(user_fragments=["u"], options={"temperature": "warm"}),
            "INVALID_OPTIONS",
            ("'temperature'", "'warm'", "not JSON text", '"text"'),
        ),
        (
            pb.ExecuteRequest(user_fragments=["u"], options={"temperature": "NaN"}),
            "INVALID_OPTIONS",
            ("'temperature'", "not JSON text"),
        ),
        (
            pb.ExecuteRequest(
                user_fragments=["u"], tools=[pb.ToolDefinition(name="t", input_schema="[]")]
            ),
            "INVALID_REQUEST",
            ("tools[0] (t)", "input_schema", "JSON object"),
        ),
        (
            pb.ExecuteRequest(messages=[pb.ChatMessage(parts=[text_part("hi")])]),
            "INVALID_REQUEST",
            ("messages[0] has no role", "ROLE_USER"),
        ),
        (
            pb.ExecuteRequest(
                messages=[pb.ChatMessage(role=pb.ROLE_USER, parts=[pb.MessagePart()])]
            ),
            "INVALID_REQUEST",
            ("messages[0].parts[0] is empty",),
        ),
        (
            pb.ExecuteRequest(
                messages=[
                    pb.ChatMessage(
                        role=pb.ROLE_ASSISTANT,
                        parts=[pb.MessagePart(tool_call=pb.ToolCall(name="f", arguments="{oops"))],
                    )
                ]
            ),
            "INVALID_REQUEST",
            ("messages[0].parts[0]", "arguments", "not valid JSON"),
        ),
    ],
)
def test_undecodable_requests_carry_their_rejection(
    message: pb.ExecuteRequest, code: str, hints: tuple[str, ...]
) -> None:
    message.request_id = "rid"
    message.model_name = "echo"

    request = mapping.to_prompt_request(message)

    assert request.rejection is not None
    assert request.rejection.code == code
    for hint in hints:
        assert hint in request.rejection.message
    # Still addressable: the refusal is answered and recorded under the client's id and model.
    assert (request.request_id, request.model) == ("rid", "echo")


# --------------------------------------------------------------------------- metrics

MetricField = Literal["input_tokens", "output_tokens", "total_tokens", "cost_usd"]
OPTIONAL_METRICS: tuple[MetricField, ...] = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
)


def test_metrics_without_usage_or_cost() -> None:
    message = mapping.to_metrics(ExecutionMetrics(duration_ms=12, timestamp=1_700_000_000))

    assert message.duration_ms == 12
    assert message.timestamp == 1_700_000_000
    assert message.retry_count == 0
    for name in OPTIONAL_METRICS:
        assert not message.HasField(name), name


def test_metrics_with_usage_and_cost() -> None:
    metrics = ExecutionMetrics(
        duration_ms=5,
        timestamp=7,
        usage=Usage(input_tokens=10, output_tokens=20),
        cost_usd=0.00125,
        retry_count=2,
    )

    message = mapping.to_metrics(metrics)

    assert (message.input_tokens, message.output_tokens, message.total_tokens) == (10, 20, 30)
    assert message.cost_usd == pytest.approx(0.00125)
    assert message.retry_count == 2


def test_zero_is_a_value_not_an_absence() -> None:
    metrics = ExecutionMetrics(
        duration_ms=0, timestamp=0, usage=Usage(input_tokens=0, output_tokens=0), cost_usd=0.0
    )

    message = mapping.to_metrics(metrics)

    for name in OPTIONAL_METRICS:
        assert message.HasField(name), name
        assert getattr(message, name) == 0


def test_partial_usage() -> None:
    message = mapping.to_metrics(
        ExecutionMetrics(duration_ms=1, timestamp=1, usage=Usage(output_tokens=4))
    )

    assert not message.HasField("input_tokens")
    assert message.output_tokens == 4
    assert message.total_tokens == 4
    assert not message.HasField("cost_usd")


def test_huge_token_counts_do_not_break_the_response() -> None:
    usage = Usage(input_tokens=3_000_000_000, output_tokens=5)

    message = mapping.to_metrics(ExecutionMetrics(duration_ms=1, timestamp=1, usage=usage))

    assert message.input_tokens == INT32_MAX
    assert message.total_tokens == INT32_MAX


# --------------------------------------------------------------------------- errors


def test_error_without_details() -> None:
    message = mapping.to_error(UpstreamFailure("boom"))

    assert (message.error_code, message.error_message) == ("UPSTREAM_ERROR", "boom")
    assert not message.HasField("error_details")


def test_error_with_details() -> None:
    error = UnknownModel("x", ["a", "b"])

    message = mapping.to_error(error)

    assert message.error_code == "MODEL_NOT_FOUND"
    assert message.error_message == error.message
    assert message.error_details == "a, b"


def test_empty_details_are_present() -> None:
    assert mapping.to_error(ProxyError("m", details="")).HasField("error_details")


# --------------------------------------------------------------------------- server info


def test_model_info_without_optional_fields() -> None:
    info = mapping.to_model_info(model("m1", provider="p", supports_streaming=False))

    assert info.model_id == "m1"
    assert info.display_name == "m1"  # falls back to the id
    assert info.provider == "p"
    assert info.supports_streaming is False
    assert list(info.aliases) == []
    assert not info.HasField("max_context_length")


def test_model_info_with_every_field() -> None:
    described = model("m1", aliases=("a", "b"), display_name="Model One", max_context_length=8192)

    info = mapping.to_model_info(described)

    assert info.display_name == "Model One"
    assert list(info.aliases) == ["a", "b"]
    assert info.max_context_length == 8192
    assert info.supports_streaming is True


def describe(limits: Limits) -> ServerDescription:
    return ServerDescription(
        server_name="proxy",
        server_version="1.2.3",
        models=(model("echo"), model("small", aliases=("fast",))),
        default_model="echo",
        aliases={"fast": "small"},
        limits=limits,
    )


def test_server_info() -> None:
    response = mapping.to_server_info(describe(Limits()))

    assert response.server_name == "proxy"
    assert response.server_version == "1.2.3"
    assert response.default_model == "echo"
    assert [m.model_id for m in response.available_models] == ["echo", "small"]
    assert dict(response.model_aliases) == {"fast": "small"}


def test_server_limits_absent() -> None:
    limits = Limits(
        max_input_length=None,
        request_timeout_seconds=30,
        max_concurrent_requests=None,
        max_requests_per_minute=None,
    )

    server_limits = mapping.to_server_info(describe(limits)).limits

    assert server_limits.request_timeout_seconds == 30
    for name in ("max_input_length", "max_concurrent_requests", "max_requests_per_minute"):
        assert not server_limits.HasField(name), name


def test_server_limits_present() -> None:
    limits = Limits(
        max_input_length=1000,
        request_timeout_seconds=2.6,
        max_concurrent_requests=8,
        max_requests_per_minute=120,
    )

    server_limits = mapping.to_server_info(describe(limits)).limits

    assert server_limits.max_input_length == 1000
    assert server_limits.request_timeout_seconds == 3
    assert server_limits.max_concurrent_requests == 8
    assert server_limits.max_requests_per_minute == 120


def test_limits_beyond_int32_are_reported_as_the_largest_int32() -> None:
    # The config accepts any positive integer; the wire field is int32.
    limits = Limits(max_input_length=3_000_000_000, request_timeout_seconds=1e10)

    server_limits = mapping.to_server_info(describe(limits)).limits

    assert server_limits.max_input_length == INT32_MAX
    assert server_limits.request_timeout_seconds == INT32_MAX


def test_a_huge_context_length_is_reported_as_the_largest_int32() -> None:
    info = mapping.to_model_info(model("m", max_context_length=10_000_000_000))

    assert info.max_context_length == INT32_MAX


def test_sub_second_timeout_is_reported_as_one_second_not_zero() -> None:
    server_limits = mapping.to_server_info(describe(Limits(request_timeout_seconds=0.4))).limits
    assert server_limits.request_timeout_seconds == 1


# --------------------------------------------------------------------------- answers


def metrics() -> ExecutionMetrics:
    return ExecutionMetrics(duration_ms=5, timestamp=1_700_000_000)


def test_a_plain_answer_says_stop_and_has_no_tool_calls() -> None:
    success = mapping.to_success(Answer("r", "hello", "echo", metrics()))

    assert (success.response_text, success.actual_model_used) == ("hello", "echo")
    assert success.finish_reason == "stop"
    assert list(success.tool_calls) == []
    assert not success.HasField("resolved_model")


def test_an_answer_with_tool_calls_carries_them_as_json_and_its_resolved_model() -> None:
    answer = Answer(
        "r",
        "",
        "gpt",
        metrics(),
        tool_calls=(ToolCall("add", {"a": 1, "b": [2, 3]}, "call-1"), ToolCall("now")),
        finish_reason=FinishReason.TOOL_CALLS,
        resolved_model="gpt-2026-01-01",
    )

    success = mapping.to_success(answer)

    assert success.finish_reason == "tool_calls"
    assert success.resolved_model == "gpt-2026-01-01"
    first, second = success.tool_calls
    assert (first.call_id, first.name) == ("call-1", "add")
    assert json.loads(first.arguments) == {"a": 1, "b": [2, 3]}
    assert (second.call_id, second.name, json.loads(second.arguments)) == ("", "now", {})


def test_the_response_and_metrics_chunk_carry_what_their_parts_map_to() -> None:
    answer = Answer(
        "r-1",
        "hi",
        "echo",
        ExecutionMetrics(duration_ms=7, timestamp=1, usage=Usage(2, 3), cost_usd=0.5),
        tool_calls=(ToolCall("add", {"a": 1}, "c"),),
        finish_reason=FinishReason.TOOL_CALLS,
    )

    response = mapping.to_answer_response("r-1", answer)
    chunk = mapping.to_metrics_chunk("r-2", answer.metrics)

    assert response == pb.ExecuteResponse(request_id="r-1", success=mapping.to_success(answer))
    assert response.success.metrics.total_tokens == 5
    assert response.success.tool_calls[0].name == "add"
    assert chunk == pb.StreamChunk(
        request_id="r-2", final_metrics=mapping.to_metrics(answer.metrics)
    )
    assert chunk.final_metrics.cost_usd == 0.5


def test_stream_complete_carries_finish_reason_and_resolved_model() -> None:
    plain = mapping.to_complete(StreamFinished("echo", metrics()))
    tooled = mapping.to_complete(
        StreamFinished("m", metrics(), FinishReason.TOOL_CALLS, resolved_model="m-v2")
    )

    assert (plain.actual_model_used, plain.finish_reason) == ("echo", "stop")
    assert not plain.HasField("resolved_model")
    assert (tooled.finish_reason, tooled.resolved_model) == ("tool_calls", "m-v2")


def test_a_tool_call_round_trips_through_the_wire_form() -> None:
    call = ToolCall("lookup", {"q": "ünïcode", "n": 3}, "c-9")
    sent = pb.MessagePart(tool_call=mapping.to_tool_call(call))
    message = pb.ExecuteRequest(
        messages=[pb.ChatMessage(role=pb.ROLE_ASSISTANT, parts=[sent])],
    )

    (decoded,) = mapping.to_prompt_request(message).messages[0].parts

    assert decoded == call
    assert isinstance(decoded, ToolCall) and decoded.arguments == call.arguments


# --------------------------------------------------------------------------- capabilities


def test_model_info_carries_capabilities_and_options() -> None:
    described = dataclasses.replace(
        model("vision", supports_schema=True),
        supports_tools=True,
        attachment_types=("image/jpeg", "image/png"),
        supports_conversation=False,
        supports_async=True,
        options=(
            OptionSpec("temperature", "number", "Sampling temperature", '{"type": "number"}'),
            OptionSpec("stop", "string|array"),
        ),
    )

    info = mapping.to_model_info(described)

    assert (info.supports_schema, info.supports_tools) == (True, True)
    assert list(info.attachment_types) == ["image/jpeg", "image/png"]
    assert (info.supports_conversation, info.supports_async) == (False, True)
    temperature, stop = info.options
    assert (temperature.name, temperature.type, temperature.description) == (
        "temperature",
        "number",
        "Sampling temperature",
    )
    assert json.loads(temperature.json_schema) == {"type": "number"}
    assert (stop.name, stop.type, stop.json_schema) == ("stop", "string|array", "{}")


def test_server_limits_report_the_attachment_rules() -> None:
    limits = Limits(
        max_attachments=3, max_attachment_bytes=5_000_000_000, allow_attachment_urls=True
    )

    server_limits = mapping.to_server_info(describe(limits)).limits

    assert server_limits.max_attachments == 3
    assert server_limits.max_attachment_bytes == 5_000_000_000
    assert server_limits.allow_attachment_urls is True
