"""The client's side of messages, options, attachments, tools and several endpoints: what goes
on the wire, what comes back, and conversations read from JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_proxy_client import (
    Attachment,
    ConfigurationError,
    Message,
    ProtocolError,
    Tool,
    ToolCall,
    ToolResult,
    parse_server_url,
)
from llm_proxy_client import _protocol as proto
from llm_proxy_client.connection import ConnectionSettings
from llm_proxy_client.conversation import conversation_from_json
from llm_proxy_client.generated import llm_proxy_pb2 as pb


def test_everything_a_prompt_carries_goes_on_the_wire() -> None:
    content = proto.Content(
        "and now?",
        system="be brief",
        messages=(
            Message.user("hi", Attachment("image/png", b"\x89PNG")),
            Message.assistant("", [ToolCall("add", {"a": 1}, "c1")]),
            Message.tool(ToolResult("c1", "add", "2")),
        ),
        options={"temperature": 0.2, "stop": ["x"]},
        attachments=(Attachment("image/gif", url="https://example.com/a.gif"),),
        tools=(Tool("add", "Adds", {"type": "object"}), Tool("now")),
    )
    request = proto.build_request(content, model="m", request_id="r")
    assert list(request.user_fragments) == ["and now?"]
    assert list(request.system_fragments) == ["be brief"]
    assert [m.role for m in request.messages] == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL]
    user, assistant, tool = request.messages
    assert user.parts[0].text == "hi"
    assert (user.parts[1].attachment.media_type, user.parts[1].attachment.content) == (
        "image/png",
        b"\x89PNG",
    )
    call = assistant.parts[0].tool_call
    assert (call.name, json.loads(call.arguments), call.call_id) == ("add", {"a": 1}, "c1")
    assert tool.parts[0].tool_result == pb.ToolResult(call_id="c1", name="add", output="2")
    assert dict(request.options) == {"temperature": "0.2", "stop": '["x"]'}
    assert request.attachments[0].url == "https://example.com/a.gif"
    assert [(t.name, t.input_schema) for t in request.tools] == [
        ("add", '{"type": "object"}'),
        ("now", ""),
    ]


def test_a_request_needs_a_prompt_or_messages() -> None:
    with pytest.raises(ConfigurationError, match="nothing to send"):
        proto.build_request(proto.Content(), model=None, request_id="r")


@pytest.mark.parametrize(
    ("attachment", "problem"),
    [
        (Attachment("image/png"), "exactly one of"),
        (Attachment("image/png", b"x", "https://e.com/x.png"), "exactly one of"),
    ],
)
def test_an_attachment_has_bytes_or_a_url(attachment: Attachment, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        proto.build_request(
            proto.Content("x", attachments=(attachment,)), model=None, request_id="r"
        )


def test_an_option_that_is_not_json_is_refused_here() -> None:
    with pytest.raises(ConfigurationError, match="'seed'"):
        proto.build_request(
            proto.Content("x", options={"seed": float("nan")}), model=None, request_id="r"
        )


def test_tool_calls_finish_reason_and_resolved_model_come_back() -> None:
    response = pb.ExecuteResponse(
        request_id="r",
        success=pb.ExecuteSuccess(
            response_text="",
            actual_model_used="echo",
            finish_reason="tool_calls",
            resolved_model="echo-2026",
            tool_calls=[pb.ToolCall(call_id="c1", name="add", arguments='{"a": 1, "b": 2}')],
        ),
    )
    result = proto.result_from(response, "r", 0)
    assert result.tool_calls == (ToolCall("add", {"a": 1, "b": 2}, "c1"),)
    assert (result.finish_reason, result.resolved_model) == ("tool_calls", "echo-2026")
    assert result.as_message() == Message("assistant", (ToolCall("add", {"a": 1, "b": 2}, "c1"),))


def test_tool_call_arguments_that_are_not_an_object_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not a JSON object"):
        proto.tool_call_from(pb.ToolCall(name="add", arguments="[1]"), "r")


def test_a_stream_collects_its_tool_calls_and_finish_reason() -> None:
    state = proto.StreamAssembler("r")
    assert state.feed(pb.StreamChunk(text_chunk="thinking")) == "thinking"
    assert state.feed(pb.StreamChunk(tool_call=pb.ToolCall(call_id="c", name="now"))) is None
    state.feed(pb.StreamChunk(final_metrics=pb.ExecutionMetrics(duration_ms=1)))
    state.feed(
        pb.StreamChunk(
            complete=pb.StreamComplete(actual_model_used="echo", finish_reason="tool_calls")
        )
    )
    result = state.result(0)
    assert result.tool_calls == (ToolCall("now", {}, "c"),)
    assert result.finish_reason == "tool_calls"
    assert result.resolved_model is None


def test_capabilities_and_attachment_limits_are_read() -> None:
    info = proto.server_info_from(
        pb.GetServerInfoResponse(
            available_models=[
                pb.ModelInfo(
                    model_id="echo",
                    supports_tools=True,
                    attachment_types=["image/png"],
                    options=[
                        pb.ModelOption(
                            name="t", type="number", json_schema='{"type": "number", "maximum": 2}'
                        ),
                        pb.ModelOption(name="broken", type="string", json_schema="{not json"),
                    ],
                )
            ],
            limits=pb.ServerLimits(max_attachments=4, max_attachment_bytes=1000),
        )
    )
    (echo,) = info.models
    assert echo.supports_tools and not echo.supports_conversation
    assert echo.attachment_types == ("image/png",)
    assert [(o.name, dict(o.json_schema)) for o in echo.options] == [
        ("t", {"type": "number", "maximum": 2}),
        ("broken", {}),
    ]
    assert (info.limits.max_attachments, info.limits.max_attachment_bytes) == (4, 1000)


def test_a_conversation_reads_from_json(tmp_path: Path) -> None:
    (tmp_path / "pic.png").write_bytes(b"\x89PNG")
    text = json.dumps(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "parts": [{"text": "see"}, {"attachment": {"path": "pic.png"}}]},
            {"role": "assistant", "parts": [{"tool_call": {"name": "add", "call_id": "c"}}]},
            {
                "role": "tool",
                "parts": [{"tool_result": {"call_id": "c", "name": "add", "output": "3"}}],
            },
        ]
    )
    messages = conversation_from_json(text, base=tmp_path)
    assert messages == [
        Message.system("be brief"),
        Message.user("see", Attachment("image/png", b"\x89PNG")),
        Message.assistant("", [ToolCall("add", {}, "c")]),
        Message.tool(ToolResult("c", "add", "3")),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ('{"role": "user"}', "a JSON list"),
        ('[{"role": "robot", "content": "x"}]', "message 0: role must be one of"),
        ('[{"role": "user"}]', "message 0 needs content"),
        ('[{"role": "user", "parts": [{"video": 1}]}]', "message 0 part 0: unknown part"),
        ('[{"role": "tool", "parts": [{"tool_result": {"name": "x"}}]}]', "needs 'call_id'"),
        ('[{"role": "user", "parts": [{"attachment": {"path": "nope.png"}}]}]', "nope.png"),
    ],
)
def test_a_conversation_that_does_not_read_says_where(
    text: str, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        conversation_from_json(text, base=tmp_path)


def test_a_url_may_name_several_endpoints() -> None:
    address = parse_server_url("llm-proxy+insecure://tok@127.0.0.1:5001,127.0.0.2:5002")
    assert address.endpoints == (("127.0.0.1", 5001), ("127.0.0.2", 5002))
    assert address.token == "tok"
    assert address.target == "ipv4:127.0.0.1:5001,127.0.0.2:5002"
    assert str(address) == "llm-proxy+insecure://127.0.0.1:5001,127.0.0.2:5002"
    assert address.is_loopback
    one = parse_server_url("llm-proxy://svc.ns.svc.cluster.local")
    assert one.target == "svc.ns.svc.cluster.local:50051"  # gRPC's DNS resolver: every replica


def test_every_channel_balances_round_robin_and_a_list_keeps_its_tls_name() -> None:
    settings = ConnectionSettings.create("llm-proxy://a.example:1,b.example:2", env={})
    options = dict(settings.channel_options())
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert options["grpc.ssl_target_name_override"] == "a.example"
    single = dict(ConnectionSettings.create("llm-proxy://a.example", env={}).channel_options())
    assert single["grpc.lb_policy_name"] == "round_robin"
    assert "grpc.ssl_target_name_override" not in single


def test_an_empty_endpoint_in_a_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no host"):
        parse_server_url("llm-proxy://a:1,,b:2")
