"""A model's options as its plugin declares them (llm's pydantic Options class): described for
GetServerInfo, and checked before the model is called."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from domain.catalog import OptionSpec
from domain.errors import InvalidOptions
from domain.request import JsonObject

# Plugins with many options (OpenAI's has a dozen) must still give a readable message.
_MAX_PROBLEMS = 10


def describe_options(model: Any) -> tuple[OptionSpec, ...]:
    options_class = getattr(model, "Options", None)
    if options_class is None:
        return ()
    return _describe_class(options_class)


@lru_cache(maxsize=256)
def _describe_class(options_class: Any) -> tuple[OptionSpec, ...]:
    # Many models of one plugin share an Options class: described once each.
    try:
        schema = options_class.model_json_schema()
    except Exception:
        # A plugin field pydantic cannot express in JSON Schema: names and descriptions only.
        fields: Mapping[str, Any] = getattr(options_class, "model_fields", {})
        return tuple(
            OptionSpec(name=name, description=field.description or "")
            for name, field in fields.items()
        )
    definitions = schema.get("$defs", {})
    properties: Mapping[str, Any] = schema.get("properties", {})
    specs = []
    for name, raw in properties.items():
        prop = _inline(raw, definitions, depth=0)
        specs.append(
            OptionSpec(
                name=name,
                type="|".join(_types(prop)),
                description=str(prop.get("description", "")),
                json_schema=json.dumps(prop, sort_keys=True),
            )
        )
    return tuple(specs)


def _inline(node: Any, definitions: Mapping[str, Any], depth: int) -> Any:
    """The schema with local $refs (enums, nested models) replaced by what they point at, so
    each option's schema stands on its own."""
    if depth > 8:
        return node
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = definitions.get(ref.removeprefix("#/$defs/"), {})
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline(merged, definitions, depth + 1)
        return {key: _inline(value, definitions, depth + 1) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions, depth + 1) for item in node]
    return node


def _types(prop: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for candidate in (prop, *prop.get("anyOf", ()), *prop.get("oneOf", ())):
        kind = candidate.get("type") if isinstance(candidate, dict) else None
        kinds = kind if isinstance(kind, list) else [kind]
        for each in kinds:
            # Every option is optional; "null" says nothing a client needs to know.
            if isinstance(each, str) and each != "null" and each not in found:
                found.append(each)
    return found


def check_options(model_id: str, model: Any, options: JsonObject) -> None:
    """Raise InvalidOptions, naming every problem and the model's options, unless the model's
    own Options class accepts `options`. Never passes values on as keyword arguments."""
    if not options:
        return
    try:
        model.Options(**dict(options))
    except ValidationError as error:
        raise InvalidOptions(
            f"model {model_id!r} does not accept these options: {_problems(error)}. "
            f"Its options: {_listing(describe_options(model))}",
            details=",".join(spec.name for spec in describe_options(model)),
        ) from None
    except TypeError as error:
        # An Options class with a custom __init__ that rejects the names outright.
        raise InvalidOptions(
            f"model {model_id!r} does not accept these options ({error}). "
            f"Its options: {_listing(describe_options(model))}"
        ) from None


def _problems(error: ValidationError) -> str:
    # Field paths and pydantic's messages only: its full text would echo the input values.
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'options'}: {item['msg']}"
        for item in error.errors()
    ]
    shown = "; ".join(problems[:_MAX_PROBLEMS])
    hidden = len(problems) - _MAX_PROBLEMS
    return shown + (f"; and {hidden} more" if hidden > 0 else "")


def _listing(specs: tuple[OptionSpec, ...]) -> str:
    if not specs:
        return "none"
    return ", ".join(f"{spec.name} ({spec.type or 'any'})" for spec in specs)
