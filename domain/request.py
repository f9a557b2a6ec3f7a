"""What a client asks for, after transport decoding and before model resolution."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.errors import EmptyRequest, InputTooLong, SchemaInvalid


@dataclass(frozen=True, slots=True)
class PromptRequest:
    user_fragments: tuple[str, ...]
    system_fragments: tuple[str, ...] = ()
    model: str | None = None
    response_schema: str | None = None
    request_id: str = ""

    def input_length(self) -> int:
        return sum(map(len, self.user_fragments)) + sum(map(len, self.system_fragments))

    def validate(self, max_input_length: int | None) -> None:
        if not any(fragment.strip() for fragment in self.user_fragments):
            raise EmptyRequest(
                "the request has no user fragment with text: put the prompt in user_fragments"
            )
        if max_input_length is not None:
            length = self.input_length()
            if length > max_input_length:
                raise InputTooLong(length, max_input_length)

    def parsed_schema(self) -> Mapping[str, Any] | None:
        """The response schema as a JSON object, or None when the client sent none."""
        if self.response_schema is None or not self.response_schema.strip():
            return None
        try:
            schema = json.loads(self.response_schema)
        except json.JSONDecodeError as exc:
            raise SchemaInvalid(
                f"response_model_schema is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}"
            ) from exc
        if not isinstance(schema, dict):
            raise SchemaInvalid(
                "response_model_schema must be a JSON Schema object such as "
                '{"type": "object", "properties": {...}}, not a JSON '
                f"{type(schema).__name__}"
            )
        kind = schema.get("type")
        if kind is not None and not isinstance(kind, str | list):
            raise SchemaInvalid('response_model_schema "type" must be a string or a list')
        return schema


@dataclass(frozen=True, slots=True)
class ModelInvocation:
    """A validated request bound to one concrete served model."""

    model_id: str
    user_fragments: tuple[str, ...]
    system_fragments: tuple[str, ...]
    schema: Mapping[str, Any] | None = field(default=None, hash=False)
