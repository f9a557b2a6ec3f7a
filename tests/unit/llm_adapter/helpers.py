"""Small builders shared by the llm adapter tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from domain.request import JsonObject, Message, ModelInvocation, Role, ToolDefinition

SCRIPTED = "tests.support.scripted_models"


def script(**spec: Any) -> str:
    return json.dumps({"script": spec})


def new_probe_name() -> str:
    return f"probe-{uuid.uuid4().hex[:8]}"


def invocation(
    model_id: str,
    *user: str,
    system: Sequence[str] = (),
    schema: JsonObject | None = None,
    options: JsonObject | None = None,
    tools: Sequence[ToolDefinition] = (),
    history: Sequence[Message] = (),
) -> ModelInvocation:
    """The original protocol's shape by default: system fragments, then user fragments; with
    `history`, those earlier turns come between them."""
    messages = [Message.of_text(Role.SYSTEM, *system)] if system else []
    messages.extend(history)
    if user:
        messages.append(Message.of_text(Role.USER, *user))
    return ModelInvocation(
        model_id=model_id,
        messages=tuple(messages),
        options=options if options is not None else {},
        schema=schema,
        tools=tuple(tools),
    )
