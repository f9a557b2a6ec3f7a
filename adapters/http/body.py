"""The JSON object every POST of the HTTP API carries."""

from __future__ import annotations

from domain.errors import InvalidRequest
from domain.json_text import JsonTextError, json_kind, parse_json
from domain.request import JsonValue


def json_object(body: bytes) -> dict[str, JsonValue] | InvalidRequest:
    """The body as a JSON object, or the refusal that says why it is not one."""
    try:
        value = parse_json(body)
    except JsonTextError as error:
        return InvalidRequest(f"the request body is not JSON: {error}")
    if not isinstance(value, dict):
        return InvalidRequest(f"the request body must be a JSON object, not a {json_kind(value)}")
    return value
