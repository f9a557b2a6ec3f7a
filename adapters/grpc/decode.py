"""ExecuteRequest -> PromptRequest: the gRPC wire form of a prompt turned into the domain's.

Fragments are the original protocol's special case of messages: system_fragments become a
system message in front, user_fragments a user message at the end. JSON carried as text
(schemas, tool arguments, option values) is parsed here, at the edge; a request that cannot
be decoded still becomes a PromptRequest, carrying the reason as its `rejection`, so the use
case answers it in-band and records it like any other refused request.
"""

from __future__ import annotations

import json
import math
from typing import Any

from domain import identifiers
from domain.errors import (
    EmptyRequest,
    InvalidOptions,
    InvalidRequest,
    ProxyError,
    SchemaInvalid,
)
from domain.identifiers import identifier_problem
from domain.json_text import MAX_JSON_DEPTH, json_kind, nesting_depth
from domain.request import (
    Attachment,
    JsonObject,
    JsonValue,
    Message,
    Part,
    PromptRequest,
    Role,
    Text,
    ToolCall,
    ToolDefinition,
    ToolResult,
    check_schema,
)
from llm_proxy_client.generated import llm_proxy_pb2 as pb

# Longer ids are not identifiers but payloads; refusing them keeps logs and replies bounded.
MAX_IDENTIFIER_LENGTH = identifiers.MAX_IDENTIFIER_LENGTH
# Deeper JSON than this is not a schema or an argument list anyone writes by hand; refusing
# it keeps recursive walks over it (ours, pydantic's, a plugin's) far from the stack limit.
# Characters of one JSON text (a schema, a tool's input schema or arguments, an option value):
# far beyond what anyone writes, and a bound on parsing time and memory per field.
MAX_JSON_CHARS = 256 * 1024

_ROLES = {
    pb.ROLE_SYSTEM: Role.SYSTEM,
    pb.ROLE_USER: Role.USER,
    pb.ROLE_ASSISTANT: Role.ASSISTANT,
    pb.ROLE_TOOL: Role.TOOL,
}
_EMPTY_INPUT: JsonObject = {"type": "object", "properties": {}}


class _Undecodable(Exception):
    def __init__(self, error: ProxyError) -> None:
        super().__init__(error.message)
        self.error = error


def to_prompt_request(message: pb.ExecuteRequest) -> PromptRequest:
    model = message.model_name if message.HasField("model_name") else None
    malformed = identifier_problem("request_id", message.request_id) or identifier_problem(
        "model_name", model
    )
    if malformed is not None:
        # Neither value is carried on: they are what must not reach a log line or a reply.
        return PromptRequest(messages=(), rejection=malformed)
    try:
        return PromptRequest(
            messages=_messages(message),
            model=model,
            options=_options(message.options),
            schema=_schema(message),
            tools=(
                tuple([_tool(index, tool) for index, tool in enumerate(message.tools)])
                if message.tools
                else ()
            ),
            request_id=message.request_id,
        )
    except _Undecodable as undecodable:
        return PromptRequest(
            messages=(), model=model, request_id=message.request_id, rejection=undecodable.error
        )


def _messages(message: pb.ExecuteRequest) -> tuple[Message, ...]:
    # Each read of a repeated field builds a new wrapper: read each once (hot path).
    chat, user, attached = message.messages, message.user_fragments, message.attachments
    if not (chat or attached or any(map(str.strip, user))):
        # Said in this protocol's terms; the domain's own check names no wire field.
        raise _Undecodable(
            EmptyRequest(
                "the request has no user fragment with text: put the prompt in user_fragments "
                "(or send the conversation in messages)"
            )
        )
    system = message.system_fragments
    if not (chat or attached or system):
        # The original protocol's whole request: one user turn.
        return (Message.of_text(Role.USER, *user),)
    messages: list[Message] = []
    if system:
        messages.append(Message.of_text(Role.SYSTEM, *system))
    if chat:
        messages.extend([_message(index, each) for index, each in enumerate(chat)])
    if user:
        messages.append(Message.of_text(Role.USER, *user))
    if attached:
        attachments = tuple([_attachment(each) for each in attached])
        if messages and messages[-1].role is Role.USER:
            last = messages.pop()
            messages.append(Message(Role.USER, last.parts + attachments))
        else:
            messages.append(Message(Role.USER, attachments))
    return tuple(messages)


def _message(index: int, message: pb.ChatMessage) -> Message:
    role = _ROLES.get(message.role)
    if role is None:
        raise _Undecodable(
            InvalidRequest(
                f"messages[{index}] has no role: set ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or "
                "ROLE_TOOL"
            )
        )
    return Message(
        role, tuple(_part(f"messages[{index}].parts[{n}]", p) for n, p in enumerate(message.parts))
    )


def _part(where: str, part: pb.MessagePart) -> Part:
    kind = part.WhichOneof("kind")
    if kind == "text":
        return Text(part.text)
    if kind == "attachment":
        return _attachment(part.attachment)
    if kind == "tool_call":
        call = part.tool_call
        arguments = _object(
            call.arguments,
            lambda problem: InvalidRequest(f"{where}: the tool call's arguments {problem}"),
            empty={},
        )
        return ToolCall(name=call.name, arguments=arguments, call_id=call.call_id)
    if kind == "tool_result":
        result = part.tool_result
        return ToolResult(call_id=result.call_id, name=result.name, output=result.output)
    raise _Undecodable(
        InvalidRequest(f"{where} is empty: set its text, attachment, tool_call or tool_result")
    )


def _attachment(attachment: pb.Attachment) -> Attachment:
    source = attachment.WhichOneof("source")
    return Attachment(
        media_type=attachment.media_type,
        content=attachment.content if source == "content" else None,
        url=attachment.url if source == "url" else None,
    )


def _options(options: Any) -> JsonObject:
    if not options:
        return {}
    parsed: dict[str, JsonValue] = {}
    for name, text in sorted(options.items()):
        try:
            parsed[name] = _json(text)
        except ValueError as error:
            raise _Undecodable(
                InvalidOptions(
                    f"option {name!r}: {text[:80]!r} is not JSON text ({error}); send values "
                    'as JSON, e.g. 0.2, 100, true, "text" or ["a", "b"]'
                )
            ) from None
    return parsed


def _schema(message: pb.ExecuteRequest) -> JsonObject | None:
    if not message.HasField("response_model_schema"):
        return None
    text = message.response_model_schema
    if not text.strip():
        return None
    schema = _object(
        text,
        lambda problem: SchemaInvalid(
            f"response_model_schema {problem}; send a JSON Schema object such as "
            '{"type": "object", "properties": {...}}'
        ),
        empty=None,
    )
    try:
        check_schema(schema)
    except SchemaInvalid as invalid:
        raise _Undecodable(SchemaInvalid(f"response_model_schema: {invalid.message}")) from None
    return schema


def _tool(index: int, tool: pb.ToolDefinition) -> ToolDefinition:
    schema = _object(
        tool.input_schema,
        lambda problem: InvalidRequest(f"tools[{index}] ({tool.name}): input_schema {problem}"),
        empty=_EMPTY_INPUT,
    )
    return ToolDefinition(name=tool.name, description=tool.description, input_schema=schema)


def _object(text: str, error: Any, *, empty: JsonObject | None) -> JsonObject:
    """`text` as a JSON object; `error(problem)` builds the refusal; blank text is `empty`."""
    if not text.strip() and empty is not None:
        return empty
    try:
        value = _json(text)
    except ValueError as invalid:
        raise _Undecodable(error(f"is not valid JSON: {invalid}")) from None
    if not isinstance(value, dict):
        raise _Undecodable(error(f"must be a JSON object, not a JSON {json_kind(value)}"))
    return value


def _json(text: str) -> JsonValue:
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"{len(text)} characters long; at most {MAX_JSON_CHARS} are accepted")
    try:
        value: JsonValue = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        # Python's own bound on integer literals (4,300 digits), with a hint meant for
        # programmers, not for whoever sent the text.
        raise ValueError("holds an integer with too many digits") from None
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _no_constant(name: str) -> JsonValue:
    # json.loads takes NaN and Infinity, which are not JSON and which no model option means.
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _finite(literal: str) -> float:
    # 1e999 parses as infinity, which a plugin re-encoding the schema would write as the
    # non-JSON Infinity.
    number = float(literal)
    if not math.isfinite(number):
        raise json.JSONDecodeError(f"{literal[:20]} is too large for a number", literal, 0)
    return number
