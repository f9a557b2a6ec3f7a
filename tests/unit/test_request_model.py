"""The transport-neutral request: what it accepts, what it refuses and how it says so, and
which requests a model can take."""

from __future__ import annotations

import dataclasses

import pytest

from domain.capabilities import check_supported
from domain.errors import (
    AttachmentRefused,
    AttachmentsTooLarge,
    EmptyRequest,
    InvalidRequest,
    NotSupportedByModel,
    ProxyError,
    SchemaInvalid,
)
from domain.policy import Limits
from domain.request import (
    Attachment,
    Message,
    PromptRequest,
    Role,
    Text,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from tests.unit.fakes import model

LIMITS = Limits()


def user(*parts: Text | Attachment) -> Message:
    return Message(Role.USER, parts)


def ask(*messages: Message, **fields: object) -> PromptRequest:
    return PromptRequest(messages=messages, **fields)  # type: ignore[arg-type]


def accepted(request: PromptRequest, limits: Limits = LIMITS) -> None:
    """Both stages, in the order the pipeline runs them."""
    request.validate(limits)
    request.check_content(limits)


def refusal(request: PromptRequest, limits: Limits = LIMITS) -> ProxyError:
    with pytest.raises(ProxyError) as raised:
        accepted(request, limits)
    return raised.value


# --------------------------------------------------------------------------- the turn to answer


def test_a_conversation_ending_in_a_user_or_tool_turn_is_accepted() -> None:
    accepted(ask(Message.of_text(Role.SYSTEM, "s"), Message.of_text(Role.USER, "hi")))
    accepted(
        ask(
            Message.of_text(Role.USER, "add"),
            Message(Role.ASSISTANT, (ToolCall("add", {"a": 1}, "c1"),)),
            Message(Role.TOOL, (ToolResult("c1", "add", "1"),)),
        )
    )
    accepted(ask(user(Attachment("image/png", content=b"x"))))


@pytest.mark.parametrize(
    ("messages", "hint"),
    [
        ((), "no message"),
        ((Message.of_text(Role.USER, " ", "\n"),), "no text and no attachment"),
        ((Message.of_text(Role.SYSTEM, "only rules"),), "ends with a system message"),
        (
            (Message.of_text(Role.USER, "q"), Message.of_text(Role.ASSISTANT, "a")),
            "ends with a assistant message",
        ),
        ((Message(Role.TOOL, ()),), "without tool results"),
    ],
)
def test_nothing_to_answer_is_an_empty_request(messages: tuple[Message, ...], hint: str) -> None:
    error = refusal(ask(*messages))

    assert isinstance(error, EmptyRequest)
    assert hint in error.message


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        (Message(Role.SYSTEM, (Attachment("image/png", b"x"),)), "messages[0] has role 'system'"),
        (Message(Role.USER, (ToolCall("f"),)), "carries a tool call; a user message carries"),
        (Message(Role.ASSISTANT, (ToolResult("c", "f", "o"),)), "carries a tool result"),
        (Message(Role.TOOL, (Text("loose text"),)), "a tool message carries a tool result"),
        (Message(Role.ASSISTANT, (ToolCall(" "),)), "needs the tool's name"),
        (Message(Role.TOOL, (ToolResult("", "", "o"),)), "needs the call id"),
    ],
)
def test_parts_a_role_cannot_carry_are_named(message: Message, hint: str) -> None:
    error = refusal(ask(message, Message.of_text(Role.USER, "go on")))

    assert type(error) is InvalidRequest
    assert hint in error.message


def test_input_length_counts_texts_and_tool_outputs_over_all_messages() -> None:
    request = ask(
        Message.of_text(Role.SYSTEM, "12345"),
        Message.of_text(Role.USER, "123"),
        Message(Role.ASSISTANT, (ToolCall("f", {}, "c"),)),
        Message(Role.TOOL, (ToolResult("c", "f", "12"),)),
    )

    accepted(request, Limits(max_input_length=10))
    error = refusal(request, Limits(max_input_length=9))
    assert error.code == "INPUT_TOO_LONG"
    assert "over all messages" in error.message


def test_a_transport_rejection_is_raised_as_is_and_only_emptiness_before_admission() -> None:
    schema_problem = SchemaInvalid("response_model_schema is not valid JSON")
    empty = EmptyRequest("put the prompt in user_fragments")

    rejected = ask(rejection=schema_problem)
    rejected.validate(LIMITS)
    with pytest.raises(SchemaInvalid) as raised:
        rejected.check_content(LIMITS)
    assert raised.value is schema_problem
    with pytest.raises(EmptyRequest) as caught:
        ask(rejection=empty).validate(LIMITS)
    assert caught.value is empty


# --------------------------------------------------------------------------- attachments


def png(size: int) -> Attachment:
    return Attachment("image/png", content=b"p" * size)


def test_attachment_count_and_total_size_are_bounded() -> None:
    limits = Limits(max_attachments=2, max_attachment_bytes=100)

    accepted(ask(user(Text("two"), png(50), png(50))), limits)
    too_many = refusal(ask(user(png(1), png(1), png(1))), limits)
    too_big = refusal(ask(user(png(60), png(41))), limits)

    assert isinstance(too_many, AttachmentsTooLarge)
    assert "3 attachments" in too_many.message and "limits.max_attachments" in too_many.message
    assert isinstance(too_big, AttachmentsTooLarge)
    assert "101 bytes" in too_big.message and "at most 100" in too_big.message
    assert too_big.code == "ATTACHMENTS_TOO_LARGE"


@pytest.mark.parametrize(
    "url",
    [
        "/etc/passwd",
        "../../secrets.txt",
        "file:///etc/passwd",
        "~/.ssh/id_rsa",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.com/a.png",
        "https://",
    ],
)
def test_anything_but_an_https_url_is_refused_and_never_read(url: str) -> None:
    allowing = Limits(allow_attachment_urls=True)

    error = refusal(ask(user(Attachment("image/png", url=url))), allowing)

    assert isinstance(error, AttachmentRefused)
    assert error.code == "INVALID_ATTACHMENT"
    assert "never reads a file path" in error.message
    assert "send the file's bytes" in error.message


def test_https_urls_only_when_the_operator_allows_them() -> None:
    request = ask(user(Attachment("image/png", url="https://example.com/cat.png")))

    error = refusal(request)
    accepted(request, Limits(allow_attachment_urls=True))

    assert isinstance(error, AttachmentRefused)
    assert "limits.allow_attachment_urls" in error.message


@pytest.mark.parametrize(
    ("attachment", "hint"),
    [
        (Attachment("", content=b"x"), "needs a media type"),
        (Attachment("png", content=b"x"), "needs a media type"),
        (Attachment("image/png"), "either its bytes or an https URL"),
        (Attachment("image/png", content=b""), "either its bytes or an https URL"),
        (Attachment("image/png", content=b"x", url="https://e.com/x"), "exactly one"),
    ],
)
def test_malformed_attachments_say_what_is_missing(attachment: Attachment, hint: str) -> None:
    error = refusal(ask(user(attachment)), Limits(allow_attachment_urls=True))

    assert isinstance(error, AttachmentRefused)
    assert hint in error.message


def test_the_media_type_base_drops_parameters_and_case() -> None:
    assert Attachment("Image/PNG; q=1", content=b"x").base_type == "image/png"


# --------------------------------------------------------------------------- tools, schema


@pytest.mark.parametrize(
    ("tools", "hint"),
    [
        ((ToolDefinition("has space"),), "not a usable tool name"),
        ((ToolDefinition(""),), "not a usable tool name"),
        ((ToolDefinition("x" * 65),), "not a usable tool name"),
        ((ToolDefinition("f"), ToolDefinition("f")), "defined twice"),
        ((ToolDefinition("f", input_schema={"type": "array"}),), "must describe a JSON object"),
    ],
)
def test_unusable_tool_definitions_are_refused(
    tools: tuple[ToolDefinition, ...], hint: str
) -> None:
    error = refusal(ask(Message.of_text(Role.USER, "hi"), tools=tools))

    assert type(error) is InvalidRequest
    assert hint in error.message


def test_a_schema_type_must_be_a_string_or_a_list() -> None:
    hi = Message.of_text(Role.USER, "hi")
    accepted(ask(hi, schema={"type": ["object", "null"]}))
    accepted(ask(hi, schema={"properties": {}}))

    error = refusal(ask(hi, schema={"type": 3}))

    assert isinstance(error, SchemaInvalid)


# --------------------------------------------------------------------------- capabilities


PLAIN = model("plain")
VISION = dataclasses.replace(
    model("vision", supports_schema=True),
    supports_tools=True,
    attachment_types=("image/jpeg", "image/png"),
)
SINGLE = dataclasses.replace(model("single"), supports_conversation=False)
ALL = (PLAIN, VISION, SINGLE)


def unsupported(target: object, request: PromptRequest) -> ProxyError:
    with pytest.raises(ProxyError) as raised:
        check_supported(target, request, lambda: ALL)  # type: ignore[arg-type]
    return raised.value


HI = Message.of_text(Role.USER, "hi")


def test_a_capable_model_takes_everything() -> None:
    request = ask(
        user(Text("look"), Attachment("image/PNG", content=b"x")),
        tools=(ToolDefinition("f"),),
        schema={"type": "object"},
    )
    check_supported(VISION, request, lambda: ALL)


def test_each_missing_capability_is_named_with_the_models_that_have_it() -> None:
    tools = unsupported(PLAIN, ask(HI, tools=(ToolDefinition("f"),)))
    schema = unsupported(PLAIN, ask(HI, schema={}))
    attachments = unsupported(PLAIN, ask(user(Attachment("image/png", content=b"x"))))
    media = unsupported(VISION, ask(user(Attachment("image/gif", content=b"x"))))
    history = unsupported(
        SINGLE, ask(HI, Message.of_text(Role.ASSISTANT, "hello"), Message.of_text(Role.USER, "?"))
    )
    two_user_turns = unsupported(SINGLE, ask(HI, HI))

    assert isinstance(tools, NotSupportedByModel)
    assert tools.code == "UNSUPPORTED_BY_MODEL"
    assert tools.message == "model 'plain' cannot call tools. Served models that can: vision"
    assert isinstance(schema, SchemaInvalid)
    assert schema.message.endswith("Served models that can: vision")
    assert isinstance(attachments, NotSupportedByModel)
    assert attachments.message.endswith("Served models that do: vision")
    assert isinstance(media, AttachmentRefused)
    assert "'image/gif'" in media.message and "image/jpeg, image/png" in media.message
    assert isinstance(history, NotSupportedByModel)
    assert "cannot continue a conversation" in history.message
    assert history.message.endswith("Served models that can: plain, vision")
    assert isinstance(two_user_turns, NotSupportedByModel)


def test_a_system_message_and_one_user_turn_are_not_a_conversation() -> None:
    check_supported(SINGLE, ask(Message.of_text(Role.SYSTEM, "rules"), HI), lambda: ALL)
