"""JSON text from a client, parsed the way every transport must: strictly and boundedly."""

from __future__ import annotations

import json

from domain.request import JsonValue

# Deeper JSON than this is not a schema or an argument list anyone writes by hand; refusing
# it keeps recursive walks over it (ours, pydantic's, a plugin's) far from the stack limit.
MAX_JSON_DEPTH = 64


class JsonTextError(ValueError):
    """The text is not JSON this server accepts; the message says where and why."""


def parse_json(text: str | bytes) -> JsonValue:
    try:
        value: JsonValue = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise JsonTextError(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except UnicodeDecodeError:
        raise JsonTextError("it is not UTF-8 text") from None
    except RecursionError:
        raise JsonTextError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise JsonTextError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def json_kind(value: JsonValue) -> str:
    """What a client sent instead of the JSON type expected, in JSON's words."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _no_constant(name: str) -> JsonValue:
    # json.loads takes NaN and Infinity, which are not JSON and which no model option means.
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def nesting_depth(value: JsonValue) -> int:
    """How deeply objects and lists nest (a scalar is 0), stopping once past MAX_JSON_DEPTH."""
    # Iterative: the point is to never recurse as deep as the input does.
    deepest = 0
    pending: list[tuple[JsonValue, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest
