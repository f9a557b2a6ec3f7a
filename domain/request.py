"""What a client asks for, in terms no transport owns: every transport maps its wire format
onto PromptRequest, and the use cases and model gateways see only this."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import field
from enum import StrEnum
from typing import TypeAlias

from domain.errors import (
    AttachmentRefused,
    AttachmentsTooLarge,
    EmptyRequest,
    InputTooLong,
    InvalidRequest,
    MalformedCall,
    ProxyError,
    SchemaInvalid,
)
from domain.policy import Limits
from domain.value import value_object

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = Mapping[str, JsonValue]

# What OpenAI, Anthropic and Gemini all accept as a function name, so a tool defined once
# works on every provider behind the proxy.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# type "/" subtype, each a token (RFC 6838), optionally followed by parameters.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(;.*)?")


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@value_object
class Text:
    text: str


@value_object
class Attachment:
    """A file sent with a message: its bytes, or (when the operator allows it) an https URL
    the model fetches. Never a path: the server reads no file on a client's behalf."""

    media_type: str
    content: bytes | None = field(default=None, repr=False)
    url: str | None = None

    @property
    def size(self) -> int:
        return len(self.content) if self.content is not None else 0

    @property
    def base_type(self) -> str:
        """The media type without parameters ("; charset=..."), lower case: what a model's
        list of accepted types is compared with."""
        return self.media_type.split(";", 1)[0].strip().lower()


@value_object
class ToolCall:
    """A model asking the client to run one of the request's tools. The proxy never runs it."""

    name: str
    arguments: JsonObject = field(default_factory=dict, hash=False)
    # Chosen by the model (or its plugin); the client echoes it in the ToolResult.
    call_id: str = ""


@value_object
class ToolResult:
    """What the client's tool returned, sent back for the model's next turn."""

    call_id: str
    name: str
    output: str


Part: TypeAlias = Text | Attachment | ToolCall | ToolResult

# Which parts each role may carry: anything else is a client mistake worth naming. Part types
# are final, so an exact type lookup is enough (and cheaper than isinstance on every request).
_ALLOWED_PARTS: Mapping[Role, tuple[type, ...]] = {
    Role.SYSTEM: (Text,),
    Role.USER: (Text, Attachment),
    Role.ASSISTANT: (Text, ToolCall),
    Role.TOOL: (ToolResult,),
}
_ALLOWED_SETS = {role: frozenset(kinds) for role, kinds in _ALLOWED_PARTS.items()}


@value_object
class Message:
    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def of_text(cls, role: Role, *texts: str) -> Message:
        return cls(role, tuple(map(Text, texts)))

    def texts(self) -> tuple[str, ...]:
        return tuple(part.text for part in self.parts if isinstance(part, Text))


@value_object
class ToolDefinition:
    """A tool the model may ask for: its name, what it does, and the JSON Schema of its input.
    Only the description travels; the implementation stays with the client."""

    name: str
    description: str = ""
    input_schema: JsonObject = field(default_factory=dict, hash=False)


@value_object
class PromptRequest:
    messages: tuple[Message, ...]
    model: str | None = None
    # Option name -> JSON value, checked against the model's own options by its gateway.
    options: JsonObject = field(default_factory=dict, hash=False)
    # Already parsed: a transport turns its wire form into a JSON object or refuses it.
    schema: JsonObject | None = field(default=None, hash=False)
    tools: tuple[ToolDefinition, ...] = ()
    request_id: str = ""
    # A problem the transport found while decoding the request. The use case refuses the
    # request with it, so it is answered and recorded like every other refusal.
    rejection: ProxyError | None = field(default=None, compare=False, hash=False)

    def input_length(self) -> int:
        total = 0
        for message in self.messages:
            for part in message.parts:
                kind = type(part)
                if kind is Text:
                    total += len(part.text)  # type: ignore[union-attr]
                elif kind is ToolResult:
                    total += len(part.output)  # type: ignore[union-attr]
        return total

    def attachments(self) -> tuple[Attachment, ...]:
        found = [
            part for message in self.messages for part in message.parts if type(part) is Attachment
        ]
        return tuple(found) if found else ()

    def has_history(self) -> bool:
        """Whether the model is asked to continue a conversation, not answer a first turn."""
        users = 0
        for message in self.messages:
            if message.role in (Role.ASSISTANT, Role.TOOL):
                return True
            users += message.role is Role.USER
        return users > 1

    def validate(self, limits: Limits) -> None:
        """The checks that cost next to nothing: run before a caller's rate is even looked at,
        so an empty or oversized request is refused without spending its allowance."""
        if self.rejection is not None:
            if isinstance(self.rejection, EmptyRequest | MalformedCall):
                raise self.rejection
            return
        _check_final_turn(self.messages)
        if limits.max_input_length is not None:
            length = self.input_length()
            if length > limits.max_input_length:
                raise InputTooLong(length, limits.max_input_length)

    def check_content(self, limits: Limits) -> None:
        """Everything else about the request itself, once the caller has been admitted."""
        if self.rejection is not None:
            raise self.rejection
        _check_structure(self.messages)
        check_attachments(self.attachments(), limits)
        check_tools(self.tools)
        if self.schema is not None:
            check_schema(self.schema)


def _check_structure(messages: tuple[Message, ...]) -> None:
    for index, message in enumerate(messages):
        allowed = _ALLOWED_SETS[message.role]
        for part in message.parts:
            kind = type(part)
            if kind not in allowed:
                kinds = " or ".join(_part_name(each) for each in _ALLOWED_PARTS[message.role])
                raise InvalidRequest(
                    f"messages[{index}] has role {message.role.value!r} and carries "
                    f"{_part_name(kind)}; a {message.role.value} message carries {kinds}"
                )
            if kind is Text:
                continue
            if isinstance(part, ToolCall) and not part.name.strip():
                raise InvalidRequest(f"messages[{index}]: a tool call needs the tool's name")
            if isinstance(part, ToolResult) and not (part.call_id or part.name):
                raise InvalidRequest(
                    f"messages[{index}]: a tool result needs the call id (or at least the "
                    "tool name) of the tool call it answers"
                )


def _check_final_turn(messages: tuple[Message, ...]) -> None:
    if not messages:
        raise EmptyRequest("the request has no message: send the prompt as a user message")
    last = messages[-1]
    if last.role is Role.USER:
        for part in last.parts:
            if type(part) is not Text or part.text.strip():
                return
        raise EmptyRequest(
            "the last user message has no text and no attachment: put the prompt in it"
        )
    if last.role is Role.TOOL:
        if last.parts:
            return
        raise EmptyRequest("the last message is a tool message without tool results")
    raise EmptyRequest(
        f"the conversation ends with a {last.role.value} message, so there is nothing for "
        "the model to answer: end it with a user message (or the tool results the model "
        "asked for)"
    )


def check_attachments(attachments: tuple[Attachment, ...], limits: Limits) -> None:
    if not attachments:
        return
    if len(attachments) > limits.max_attachments:
        raise AttachmentsTooLarge(
            f"the request carries {len(attachments)} attachments; this server accepts at most "
            f"{limits.max_attachments} (limits.max_attachments)"
        )
    total = 0
    for index, attachment in enumerate(attachments):
        _check_attachment(index, attachment, limits)
        total += attachment.size
    if total > limits.max_attachment_bytes:
        raise AttachmentsTooLarge(
            f"the attachments add up to {total} bytes; this server accepts at most "
            f"{limits.max_attachment_bytes} (limits.max_attachment_bytes). Send smaller files",
        )


def _check_attachment(index: int, attachment: Attachment, limits: Limits) -> None:
    where = f"attachment {index + 1}"
    if not _MEDIA_TYPE.fullmatch(attachment.media_type.strip()):
        raise AttachmentRefused(
            f"{where} needs a media type such as image/png, not {attachment.media_type!r}"
        )
    has_content = attachment.content is not None and len(attachment.content) > 0
    if has_content == (attachment.url is not None):
        raise AttachmentRefused(
            f"{where} must carry either its bytes or an https URL (exactly one of them)"
        )
    if attachment.url is None:
        return
    url = attachment.url.strip()
    if not url.lower().startswith("https://") or len(url) <= len("https://"):
        # A path or file: URL would make the server read its own files for a client.
        raise AttachmentRefused(
            f"{where}: {url[:80]!r} is not an https URL. The server never reads a file path "
            "or any other kind of URL for a client: send the file's bytes instead"
        )
    if not limits.allow_attachment_urls:
        raise AttachmentRefused(
            f"{where}: this server does not fetch attachment URLs "
            "(limits.allow_attachment_urls is off): send the file's bytes instead"
        )


def check_tools(tools: tuple[ToolDefinition, ...]) -> None:
    if not tools:
        return
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if not _TOOL_NAME.fullmatch(tool.name):
            raise InvalidRequest(
                f"tools[{index}]: {tool.name[:80]!r} is not a usable tool name; use 1 to 64 "
                "letters, digits, '_' or '-'"
            )
        if tool.name in seen:
            raise InvalidRequest(f"tools[{index}]: the tool {tool.name!r} is defined twice")
        seen.add(tool.name)
        kind = tool.input_schema.get("type")
        if kind is not None and kind != "object":
            raise InvalidRequest(
                f"tools[{index}] ({tool.name}): the input schema must describe a JSON object "
                f'({{"type": "object", "properties": {{...}}}}), not type {kind!r}'
            )


def check_schema(schema: JsonObject) -> None:
    kind = schema.get("type")
    if kind is not None and not isinstance(kind, str | list):
        raise SchemaInvalid('the response schema\'s "type" must be a string or a list')


def _part_name(kind: type) -> str:
    return {
        Text: "text",
        Attachment: "an attachment",
        ToolCall: "a tool call",
        ToolResult: "a tool result",
    }.get(kind, kind.__name__)


@value_object
class ModelInvocation:
    """A validated request bound to one concrete served model."""

    model_id: str
    messages: tuple[Message, ...]
    options: JsonObject = field(default_factory=dict, hash=False)
    schema: JsonObject | None = field(default=None, hash=False)
    tools: tuple[ToolDefinition, ...] = ()
    # The resolved model's ModelDescription.handle: what the gateway runs.
    handle: object = field(default=None, compare=False, hash=False, repr=False)
