"""LlmGateway with everything a prompt can carry: options, history, attachments, tools.

Real llm, real plugins: llm-echo reports what it was given (prompt, system, options,
attachments, the previous turns it finds in conversation.responses, tool results) and emits
tool calls on request; the scripted models report llm's prompt.messages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from adapters.llm import LlmGateway, LlmModelRegistry
from adapters.llm.prompting import build_call
from domain.answer import GatewayEvent, TextChunk, UsageReport
from domain.errors import InvalidOptions, NotSupportedByModel
from domain.request import (
    Attachment,
    Message,
    ModelInvocation,
    Role,
    Text,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from tests.support import scripted_models
from tests.unit.llm_adapter.helpers import invocation, new_probe_name, script

ECHO_BOTH = pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
ADD = ToolDefinition(
    "add",
    "Adds two integers",
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


async def run(gateway: LlmGateway, call: ModelInvocation, *, stream: bool) -> list[GatewayEvent]:
    if stream:
        return [event async for event in gateway.stream(call)]
    output = await gateway.complete(call)
    return [TextChunk(output.text), *output.tool_calls, UsageReport(output.usage)]


def text_of(events: list[GatewayEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextChunk))


def echoed(events: list[GatewayEvent]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text_of(events))
    return result


# --------------------------------------------------------------------------- options


@ECHO_BOTH
async def test_options_reach_the_model(gateway: LlmGateway, stream: bool) -> None:
    events = await run(
        gateway, invocation("echo", "hi", options={"example_bool": True}), stream=stream
    )

    assert echoed(events)["options"] == {"example_bool": True}


async def test_option_values_are_validated_by_the_models_own_options_class(
    gateway: LlmGateway,
) -> None:
    output = await gateway.complete(invocation("markov", "a b c", options={"length": "3"}))

    # llm-markov's Options declares length as an int: pydantic turned "3" into 3 words.
    assert len(output.text.split()) == 3


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        ({"temperature": 0.2}, ["temperature: Extra inputs are not permitted"]),
        ({"example_bool": "perhaps"}, ["example_bool: Input should be a valid boolean"]),
        # llm takes `key` from keyword arguments as the provider's API key; as an option it is
        # just an unknown name.
        ({"key": "sk-injected"}, ["key: Extra inputs are not permitted"]),
    ],
)
async def test_invalid_options_are_refused_with_the_valid_ones_before_any_call(
    gateway: LlmGateway, options: dict[str, Any], problems: list[str]
) -> None:
    with pytest.raises(InvalidOptions) as raised:
        await gateway.complete(invocation("echo", "hi", options=options))

    error = raised.value
    assert error.code == "INVALID_OPTIONS"
    for problem in problems:
        assert problem in error.message
    assert "Its options: example_bool (boolean), thinking (boolean)" in error.message
    assert error.details == "example_bool,thinking"
    # pydantic's own text would quote the rejected value back; ours names the field only.
    assert "perhaps" not in error.message and "sk-injected" not in error.message


async def test_invalid_options_never_start_the_model(gateway: LlmGateway) -> None:
    name = new_probe_name()
    with pytest.raises(InvalidOptions) as raised:
        await gateway.complete(
            invocation("scripted", script(chunks=["x"], probe=name), options={"seed": 1})
        )
    assert "Its options: none" in raised.value.message
    assert name not in scripted_models.PROBES


async def test_a_key_option_cannot_become_the_api_key(
    gateway: LlmGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_ECHO_NEEDS_KEY_KEY", "the-servers-key")
    registry = LlmModelRegistry(serve=["echo-needs-key"])
    registry.load()
    keyed = LlmGateway(registry, max_threads=2)
    try:
        with pytest.raises(InvalidOptions):
            await keyed.complete(invocation("echo-needs-key", "hi", options={"key": "client-key"}))
        output = await keyed.complete(invocation("echo-needs-key", "hi"))
    finally:
        keyed.close()
    assert json.loads(output.text)["key"] == "the-servers-key"


# --------------------------------------------------------------------------- conversations


def turn(role: Role, text: str) -> Message:
    return Message.of_text(role, text)


HISTORY = (
    turn(Role.USER, "What is 2 + 2?"),
    turn(Role.ASSISTANT, "4"),
    turn(Role.USER, "And times 3?"),
    turn(Role.ASSISTANT, "12"),
)


@ECHO_BOTH
async def test_earlier_turns_are_the_previous_responses_of_a_conversation(
    gateway: LlmGateway, stream: bool
) -> None:
    call = invocation("echo", "Minus 5?", system=["You do arithmetic."], history=HISTORY)

    seen = echoed(await run(gateway, call, stream=stream))

    assert seen["prompt"] == "Minus 5?"
    assert seen["system"] == "You do arithmetic."
    assert seen["previous"] == [{"prompt": "What is 2 + 2?"}, {"prompt": "And times 3?"}]


@pytest.mark.parametrize("model", ["scripted", "scripted-async"])
async def test_plugins_reading_prompt_messages_see_the_whole_conversation_in_order(
    gateway: LlmGateway, model: str
) -> None:
    final = script(echo_messages=True)
    call = invocation(model, final, system=["Be exact."], history=HISTORY)

    messages = json.loads((await gateway.complete(call)).text)

    assert [(m["role"], [p.get("text") for p in m["parts"]]) for m in messages] == [
        ("system", ["Be exact."]),
        ("user", ["What is 2 + 2?"]),
        ("assistant", ["4"]),
        ("user", ["And times 3?"]),
        ("assistant", ["12"]),
        ("user", [final]),
    ]


async def test_a_first_turn_is_sent_without_a_conversation(gateway: LlmGateway) -> None:
    seen = json.loads((await gateway.complete(invocation("echo", "hi"))).text)

    assert seen["previous"] == []


async def test_a_model_that_cannot_hold_a_conversation_is_refused_in_band(
    gateway: LlmGateway, registry: LlmModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The use case refuses this before the gateway from the catalog; this is the backstop.
    monkeypatch.setattr(
        registry.served_model("echo").preferred, "supports_conversation", False, raising=False
    )

    with pytest.raises(NotSupportedByModel) as raised:
        await gateway.complete(invocation("echo", "again", history=HISTORY))

    assert "cannot continue a conversation" in raised.value.message


# --------------------------------------------------------------------------- attachments


@ECHO_BOTH
async def test_attachment_bytes_reach_the_model_with_their_media_type(
    gateway: LlmGateway, stream: bool
) -> None:
    call = ModelInvocation(
        "echo",
        (Message(Role.USER, (Text("What is this?"), Attachment("image/PNG; x=y", content=PNG))),),
    )

    seen = echoed(await run(gateway, call, stream=stream))

    assert seen["prompt"] == "What is this?"
    assert seen["attachments"] == [
        {"type": "image/png", "path": None, "url": None, "id": hashlib.sha256(PNG).hexdigest()}
    ]


async def test_a_url_attachment_is_passed_as_a_url_not_fetched(gateway: LlmGateway) -> None:
    url = "https://images.example/cat.jpg"
    call = ModelInvocation("echo", (Message(Role.USER, (Attachment("image/jpeg", url=url),)),))

    (attachment,) = json.loads((await gateway.complete(call)).text)["attachments"]

    assert (attachment["type"], attachment["url"], attachment["path"]) == ("image/jpeg", url, None)


# --------------------------------------------------------------------------- tools


def asks_for(*calls: dict[str, Any]) -> str:
    """An llm-echo prompt that makes it call tools."""
    return json.dumps({"prompt": "use the tools", "tool_calls": list(calls)})


@ECHO_BOTH
async def test_tool_calls_come_back_whole_with_ids_and_the_tool_never_runs(
    gateway: LlmGateway, stream: bool
) -> None:
    call = invocation(
        "echo",
        asks_for({"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "add", "arguments": {}}),
        tools=[ADD],
    )

    events = await run(gateway, call, stream=stream)

    calls = [event for event in events if isinstance(event, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 2, "b": 3}), ("add", {})]
    assert all(c.call_id.startswith("tc_") for c in calls)
    assert calls[0].call_id != calls[1].call_id
    # Tool calls come after the text and before the usage report.
    assert isinstance(events[-1], UsageReport)
    assert isinstance(events[0], TextChunk)


async def test_a_request_without_tools_never_reports_tool_calls(gateway: LlmGateway) -> None:
    output = await gateway.complete(invocation("echo", asks_for({"name": "add"})))

    assert output.tool_calls == ()


# A question, the model's call for a tool, and the client's result for it.
TOOL_EXCHANGE = (
    Message.of_text(Role.USER, "What is 2 + 3?"),
    Message(Role.ASSISTANT, (ToolCall("add", {"a": 2, "b": 3}, "tc_1"),)),
    Message(Role.TOOL, (ToolResult("tc_1", "add", "5"),)),
)


async def test_tool_results_go_back_to_the_model_with_the_history(gateway: LlmGateway) -> None:
    call = ModelInvocation("echo", TOOL_EXCHANGE, tools=(ADD,))

    seen = json.loads((await gateway.complete(call)).text)

    assert seen["tool_results"] == [{"name": "add", "output": "5", "tool_call_id": "tc_1"}]
    assert seen["previous"] == [{"prompt": "What is 2 + 3?"}]


async def test_tool_definitions_reach_the_model_without_an_implementation(
    gateway: LlmGateway, monkeypatch: pytest.MonkeyPatch, registry: LlmModelRegistry
) -> None:
    seen: list[Any] = []
    echo = registry.served_model("echo").preferred
    original = type(echo).execute

    def spy(self: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(prompt.tools)
        return original(self, prompt, *args, **kwargs)

    monkeypatch.setattr(type(echo), "execute", spy)
    await gateway.complete(invocation("echo", "hi", tools=[ADD]))

    (tool,) = seen
    assert (tool.name, tool.description, tool.input_schema) == (
        "add",
        "Adds two integers",
        dict(ADD.input_schema),
    )
    assert tool.implementation is None


# --------------------------------------------------------------------------- capabilities


def test_the_catalog_describes_what_each_model_can_do(registry: LlmModelRegistry) -> None:
    models = {model.model_id: model for model in registry.current().models}
    echo, markov, scripted = models["echo"], models["markov"], models["scripted-async"]

    assert echo.supports_tools and not markov.supports_tools
    assert echo.attachment_types == ("image/gif", "image/jpeg", "image/png")
    assert markov.attachment_types == ()
    assert (echo.supports_async, markov.supports_async, scripted.supports_async) == (
        True,
        False,
        True,
    )
    assert echo.supports_conversation and scripted.supports_schema
    assert [(o.name, o.type) for o in echo.options] == [
        ("example_bool", "boolean"),
        ("thinking", "boolean"),
    ]
    assert echo.options[0].description == "Example boolean option"
    assert json.loads(echo.options[0].json_schema)["description"] == "Example boolean option"
    length = next(option for option in markov.options if option.name == "length")
    # Optional options are typed by what they take; "null" only says they may be left out.
    assert length.type == "integer"
    assert json.loads(length.json_schema)["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert scripted.options == ()


async def test_tool_results_and_a_new_question_make_one_turn(gateway: LlmGateway) -> None:
    call = ModelInvocation(
        "echo",
        (*TOOL_EXCHANGE, Message.of_text(Role.USER, "Thanks. Now say it in words.")),
        tools=(ADD,),
    )

    seen = json.loads((await gateway.complete(call)).text)

    assert seen["prompt"] == "Thanks. Now say it in words."
    assert seen["tool_results"] == [{"name": "add", "output": "5", "tool_call_id": "tc_1"}]
    assert seen["previous"] == [{"prompt": "What is 2 + 3?"}]


async def test_a_finished_tool_exchange_is_history_with_its_results(gateway: LlmGateway) -> None:
    final = script(echo_messages=True)
    call = ModelInvocation(
        "scripted",
        (
            *TOOL_EXCHANGE,
            Message.of_text(Role.ASSISTANT, "It is 5."),
            Message.of_text(Role.USER, final),
        ),
    )

    messages = json.loads((await gateway.complete(call)).text)

    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[1]["parts"] == [
        {"type": "tool_call", "name": "add", "arguments": {"a": 2, "b": 3}, "tool_call_id": "tc_1"}
    ]
    assert messages[2]["parts"] == [
        {"type": "tool_result", "name": "add", "output": "5", "tool_call_id": "tc_1"}
    ]


# --------------------------------------------------------------------------- one plain turn


@pytest.mark.parametrize("stream", [False, True])
def test_one_user_turn_of_text_is_built_as_the_general_path_builds_it(stream: bool) -> None:
    turn = Message(Role.USER, (Text("first"), Text("second")))
    plain = build_call(ModelInvocation("echo", (turn,)), "model", stream=stream)
    # With an option the same turn takes the general path; only the option differs.
    general = build_call(ModelInvocation("echo", (turn,), options={"x": 1}), "model", stream=stream)

    assert plain.target == general.target == "model"
    assert plain.kwargs == {k: v for k, v in general.kwargs.items() if k != "options"}
    assert plain.kwargs["fragments"] == ["first", "second"]


def test_a_turn_with_an_attachment_or_a_system_message_is_not_taken_for_a_plain_one() -> None:
    image = Attachment("image/png", content=PNG)
    with_image = build_call(
        ModelInvocation("echo", (Message(Role.USER, (Text("look"), image)),)), "m", stream=False
    )
    with_system = build_call(
        ModelInvocation(
            "echo", (Message.of_text(Role.SYSTEM, "be brief"), Message.of_text(Role.USER, "hi"))
        ),
        "m",
        stream=False,
    )

    assert len(with_image.kwargs["attachments"]) == 1
    assert with_system.kwargs["system_fragments"] == ["be brief"]
