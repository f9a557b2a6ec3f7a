"""A conversation written as JSON (for files, pipes and the `prompt --conversation` command).

    [{"role": "system", "content": "You do arithmetic."},
     {"role": "user", "content": "What is 2 + 2?"},
     {"role": "assistant", "content": "4"},
     {"role": "user", "parts": [{"text": "And this?"},
                                {"attachment": {"path": "sum.png"}}]}]

A message has ``content`` (text) or ``parts``; a part is ``{"text": ...}``,
``{"attachment": {"path": ... | "url": ..., "media_type": ...}}``,
``{"tool_call": {"name": ..., "arguments": {...}, "call_id": ...}}`` or
``{"tool_result": {"call_id": ..., "name": ..., "output": ...}}``. Attachment paths are read
here, relative to ``base``; the server is only ever sent bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from llm_proxy_client.errors import ConfigurationError
from llm_proxy_client.types import ROLES, Attachment, Message, Part, ToolCall, ToolResult


def conversation_from_json(text: str, *, base: Path | None = None) -> list[Message]:
    """The messages of a JSON conversation; ConfigurationError says what is wrong and where."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"the conversation is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise ConfigurationError("a conversation is a JSON list of messages")
    return [_message(f"message {n}", item, base or Path.cwd()) for n, item in enumerate(data)]


def _message(where: str, item: object, base: Path) -> Message:
    if not isinstance(item, Mapping):
        raise ConfigurationError(f"{where} must be an object with a role")
    role = item.get("role")
    if role not in ROLES:
        raise ConfigurationError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    if "content" in item:
        content = item["content"]
        if not isinstance(content, str):
            raise ConfigurationError(f"{where}: content must be text; use parts for the rest")
        return Message(role, (content,))
    parts = item.get("parts")
    if not isinstance(parts, list):
        raise ConfigurationError(f"{where} needs content (text) or parts (a list)")
    return Message(role, tuple(_part(f"{where} part {n}", p, base) for n, p in enumerate(parts)))


def _part(where: str, part: object, base: Path) -> Part:
    if not isinstance(part, Mapping) or len(part) != 1:
        raise ConfigurationError(
            f"{where} must be one of {{'text': ...}}, {{'attachment': ...}}, "
            "{'tool_call': ...} or {'tool_result': ...}"
        )
    ((kind, value),) = part.items()
    try:
        if kind == "text" and isinstance(value, str):
            return value
        if kind == "attachment" and isinstance(value, Mapping):
            if "path" in value:
                return Attachment.from_path(base / str(value["path"]), value.get("media_type"))
            return Attachment(media_type=str(value["media_type"]), url=str(value["url"]))
        if kind == "tool_call" and isinstance(value, Mapping):
            arguments = value.get("arguments") or {}
            if not isinstance(arguments, Mapping):
                raise ConfigurationError(f"{where}: arguments must be a JSON object")
            return ToolCall(str(value["name"]), dict(arguments), str(value.get("call_id", "")))
        if kind == "tool_result" and isinstance(value, Mapping):
            return ToolResult(str(value["call_id"]), str(value["name"]), str(value["output"]))
    except KeyError as missing:
        raise ConfigurationError(f"{where}: {kind} needs {missing}") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    raise ConfigurationError(f"{where}: unknown part {kind!r} or wrong value type")
