"""An OpenAI chat completion request turned into the domain's PromptRequest.

Only the mapping lives here: what the request means (limits, models, tools, attachments) is
checked by the use case like for every transport. A body that cannot be mapped still becomes a
PromptRequest carrying the reason as its `rejection`, so the use case refuses and records it
like any other refusal.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Mapping
from urllib.parse import urlsplit

from adapters.http.body import json_object
from domain.errors import EmptyRequest, InvalidOptions, InvalidRequest, ProxyError, SchemaInvalid
from domain.identifiers import identifier_problem
from domain.json_text import JsonTextError, json_kind, parse_json
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
)
from domain.value import value_object

_ROLES = {
    "system": Role.SYSTEM,
    # OpenAI's newer name for the system turn of reasoning models.
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
    "tool": Role.TOOL,
}
# OpenAI's sampling parameters under the names llm's models give them; the model's own
# options class then accepts or refuses each one with the list of what it has.
_OPTION_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "logit_bias": "logit_bias",
    "reasoning_effort": "reasoning_effort",
}
# Fields of the request itself rather than options of the model.
_PROTOCOL = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)
# Parts of OpenAI's API this proxy does not carry; a client that sets them must hear so
# rather than silently get something else. Their "off" values are accepted.
_UNSUPPORTED = {
    "logprobs": "log probabilities are not available through llm",
    "top_logprobs": "log probabilities are not available through llm",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "functions": "the deprecated 'functions' field is not supported: send 'tools'",
    "function_call": "the deprecated 'function_call' field is not supported: send 'tool_choice'",
    "web_search_options": "web search is not supported",
}
# Accepted and ignored: bookkeeping fields of OpenAI's own platform.
_IGNORED = frozenset({"store", "metadata", "service_tier"})
_EMPTY_INPUT: JsonObject = {"type": "object", "properties": {}}


@value_object
class ChatRequest:
    """The domain request, and what only the HTTP answer needs."""

    prompt: PromptRequest
    stream: bool = False
    include_usage: bool = False
    # The end user the client acts for (OpenAI's `user`), recorded with the request.
    user: str | None = None


class _Refused(Exception):
    def __init__(self, error: ProxyError) -> None:
        super().__init__(error.message)
        self.error = error


def chat_request(body: bytes, request_id: str) -> ChatRequest:
    """Never raises: an unusable body is a ChatRequest whose prompt carries the rejection."""
    value = json_object(body)
    if isinstance(value, InvalidRequest):
        return _rejected(value, request_id)
    model = value.get("model")
    stream = value.get("stream") is True
    try:
        if model is not None and not isinstance(model, str):
            raise _Refused(InvalidRequest("'model' must be a string: a model id or alias"))
        if (malformed := identifier_problem("model", model)) is not None:
            model = None
            raise _Refused(malformed)
        user = _user(value.get("user"))
        include_usage = _include_usage(value.get("stream_options"), stream)
        _check_n(value.get("n"))
        tools = _tools(value.get("tools"), value.get("tool_choice"))
        prompt = PromptRequest(
            messages=_messages(value.get("messages")),
            model=model,
            options=_options(value),
            schema=_response_format(value.get("response_format")),
            tools=tools,
            request_id=request_id,
        )
    except _Refused as refused:
        return ChatRequest(
            PromptRequest(
                messages=(),
                model=model if isinstance(model, str) else None,
                request_id=request_id,
                rejection=refused.error,
            ),
            stream=stream,
        )
    return ChatRequest(prompt, stream=stream, include_usage=include_usage, user=user)


def _rejected(error: ProxyError, request_id: str) -> ChatRequest:
    return ChatRequest(PromptRequest(messages=(), request_id=request_id, rejection=error))


def _user(value: JsonValue) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refused(InvalidRequest("'user' must be a string naming the end user"))
    if (malformed := identifier_problem("user", value)) is not None:
        raise _Refused(malformed)
    return value or None


def _include_usage(value: JsonValue, stream: bool) -> bool:
    if value is None:
        return False
    if not isinstance(value, dict):
        raise _Refused(InvalidRequest("'stream_options' must be an object"))
    if not stream:
        raise _Refused(InvalidRequest("'stream_options' is only allowed with 'stream': true"))
    return value.get("include_usage") is True


def _check_n(value: JsonValue) -> None:
    if value is None or value == 1:
        return
    raise _Refused(
        InvalidRequest(
            f"'n' is {value!r}: this server returns one choice per request; send n=1 (or "
            "leave it out) and make several requests for several answers"
        )
    )


def _options(body: Mapping[str, JsonValue]) -> JsonObject:
    options: dict[str, JsonValue] = {}
    unknown: list[str] = []
    for name, value in body.items():
        if name in _PROTOCOL or name in _IGNORED:
            continue
        if name in _UNSUPPORTED:
            if value in (None, False, 0, [], {}):
                continue
            raise _Refused(InvalidRequest(f"'{name}': {_UNSUPPORTED[name]}"))
        option = _OPTION_NAMES.get(name)
        if option is None:
            unknown.append(name)
            continue
        if value is None:
            continue
        if option in options:
            raise _Refused(
                InvalidOptions("send only one of 'max_tokens' and 'max_completion_tokens'")
            )
        options[option] = value
    if unknown:
        raise _Refused(
            InvalidOptions(
                f"unknown field{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(name) for name in sorted(unknown))}; this server accepts "
                f"{', '.join(sorted(_PROTOCOL | set(_OPTION_NAMES)))}"
            )
        )
    return options


def _response_format(value: JsonValue) -> JsonObject | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Refused(SchemaInvalid("'response_format' must be an object with a 'type'"))
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _Refused(
                SchemaInvalid(
                    "response_format.json_schema.schema must be a JSON Schema object such as "
                    '{"type": "object", "properties": {...}}'
                )
            )
        return schema
    raise _Refused(
        SchemaInvalid(
            f"response_format.type {kind!r} is not one of 'text', 'json_object', 'json_schema'"
        )
    )


def _tools(value: JsonValue, choice: JsonValue) -> tuple[ToolDefinition, ...]:
    if value is None:
        tools: tuple[ToolDefinition, ...] = ()
    elif not isinstance(value, list):
        raise _Refused(InvalidRequest("'tools' must be a list of function tools"))
    else:
        tools = tuple(_tool(index, tool) for index, tool in enumerate(value))
    if choice is None or choice == "auto":
        return tools
    if choice == "none":
        # The model must not call a tool: it is simply not told about any.
        return ()
    raise _Refused(
        InvalidRequest(
            f"tool_choice {choice!r} is not supported: llm lets the model choose, so send "
            "'auto' or 'none'"
        )
    )


def _tool(index: int, tool: JsonValue) -> ToolDefinition:
    where = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise _Refused(
            InvalidRequest(f"{where} must be {{'type': 'function', 'function': {{...}}}}")
        )
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _Refused(InvalidRequest(f"{where}.function needs a 'name'"))
    parameters = function.get("parameters", _EMPTY_INPUT)
    if not isinstance(parameters, dict):
        raise _Refused(InvalidRequest(f"{where}.function.parameters must be a JSON Schema object"))
    description = function.get("description")
    return ToolDefinition(
        name=str(function["name"]),
        description=description if isinstance(description, str) else "",
        input_schema=parameters,
    )


def _messages(value: JsonValue) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _Refused(
            EmptyRequest("'messages' must be a non-empty list; put the prompt in a user message")
        )
    names: dict[str, str] = {}
    return tuple(_message(index, each, names) for index, each in enumerate(value))


def _message(index: int, value: JsonValue, tool_names: dict[str, str]) -> Message:
    where = f"messages[{index}]"
    if not isinstance(value, dict):
        raise _Refused(InvalidRequest(f"{where} must be an object with a 'role'"))
    role_name = value.get("role")
    role = _ROLES.get(role_name) if isinstance(role_name, str) else None
    if role is None:
        raise _Refused(
            InvalidRequest(
                f"{where}.role {role_name!r} is not one of system, developer, user, assistant, tool"
            )
        )
    content = value.get("content")
    if role is Role.TOOL:
        call_id = value.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _Refused(InvalidRequest(f"{where}: a tool message needs its 'tool_call_id'"))
        output = "".join(
            part.text for part in _content(where, content, images=False) if isinstance(part, Text)
        )
        return Message(role, (ToolResult(call_id, tool_names.get(call_id, ""), output),))
    parts: list[Part] = list(_content(where, content, images=role is Role.USER))
    if role is Role.ASSISTANT:
        parts.extend(_tool_calls(where, value.get("tool_calls"), tool_names))
    return Message(role, tuple(parts))


def _content(where: str, content: JsonValue, *, images: bool) -> list[Text | Attachment]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise _Refused(InvalidRequest(f"{where}.content must be a string or a list of parts"))
    parts: list[Text | Attachment] = []
    for number, part in enumerate(content):
        at = f"{where}.content[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(part, dict) and kind == "text" and isinstance(part.get("text"), str):
            parts.append(Text(str(part["text"])))
        elif isinstance(part, dict) and kind == "image_url" and images:
            parts.append(_image(at, part.get("image_url")))
        elif kind == "image_url":
            raise _Refused(InvalidRequest(f"{at}: only user messages may carry images"))
        else:
            raise _Refused(
                InvalidRequest(
                    f"{at}: part type {kind!r} is not supported; send 'text' parts (and "
                    "'image_url' parts in user messages)"
                )
            )
    return parts


def _image(where: str, value: JsonValue) -> Attachment:
    url = value.get("url") if isinstance(value, dict) else None
    if not isinstance(url, str):
        raise _Refused(InvalidRequest(f"{where}.image_url needs a 'url'"))
    if url.startswith("data:"):
        header, comma, data = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise _Refused(
                InvalidRequest(f"{where}: a data URL must be data:<media type>;base64,<data>")
            )
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Refused(InvalidRequest(f"{where}: the data URL's base64 is invalid")) from None
        return Attachment(media_type=header[len("data:") : -len(";base64")], content=content)
    # A URL is passed on as it is: the domain's attachment rules decide whether it may be
    # fetched at all (https only, and only when the operator allows URLs).
    media_type, _ = mimetypes.guess_type(urlsplit(url).path)
    return Attachment(media_type=media_type or "image/jpeg", url=url)


def _tool_calls(where: str, value: JsonValue, names: dict[str, str]) -> list[ToolCall]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Refused(InvalidRequest(f"{where}.tool_calls must be a list"))
    calls: list[ToolCall] = []
    for number, call in enumerate(value):
        at = f"{where}.tool_calls[{number}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(function, dict):
            raise _Refused(InvalidRequest(f"{at} must be {{'id', 'type', 'function'}}"))
        name = function.get("name")
        if not isinstance(name, str):
            raise _Refused(InvalidRequest(f"{at}.function needs a 'name'"))
        call_id = call.get("id")
        call_id = call_id if isinstance(call_id, str) else ""
        calls.append(ToolCall(name, _arguments(at, function.get("arguments")), call_id))
        if call_id:
            names[call_id] = name
    return calls


def _arguments(where: str, value: JsonValue) -> JsonObject:
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        raise _Refused(InvalidRequest(f"{where}.function.arguments must be JSON text"))
    try:
        parsed = parse_json(value)
    except JsonTextError as error:
        raise _Refused(
            InvalidRequest(f"{where}.function.arguments is not valid JSON: {error}")
        ) from None
    if not isinstance(parsed, dict):
        raise _Refused(
            InvalidRequest(
                f"{where}.function.arguments must be a JSON object, not a {json_kind(parsed)}"
            )
        )
    return parsed
