"""A model's options as GetServerInfo describes them, from plugins' llm.Options classes."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import llm
import pytest
from pydantic import Field

from adapters.llm.options import check_options, describe_options
from domain.errors import InvalidOptions


class Detail(StrEnum):
    LOW = "low"
    HIGH = "high"


class Rich:
    """A model with the kinds of options real plugins declare."""

    class Options(llm.Options):
        temperature: float | None = Field(default=None, ge=0, le=2, description="Randomness")
        stop: str | list[str] | None = Field(default=None, description="Where to stop")
        detail: Detail | None = Field(default=None, description="Image detail")
        undocumented: int | None = None


class Handler:
    """A plain Python class: pydantic can hold one but not describe it in JSON Schema."""


class Opaque:
    """Options pydantic cannot express as JSON Schema (an arbitrary Python type)."""

    class Options(llm.Options):
        model_config = {"arbitrary_types_allowed": True, "extra": "forbid"}
        handler: Handler | None = Field(default=None, description="A callable")
        level: int | None = None


def test_types_descriptions_and_bounds_come_from_the_options_class() -> None:
    specs = {spec.name: spec for spec in describe_options(Rich())}

    assert (specs["temperature"].type, specs["temperature"].description) == ("number", "Randomness")
    temperature = json.loads(specs["temperature"].json_schema)
    assert (temperature["anyOf"][0]["minimum"], temperature["anyOf"][0]["maximum"]) == (0, 2)
    assert specs["stop"].type == "string|array"
    assert (specs["undocumented"].type, specs["undocumented"].description) == ("integer", "")


def test_an_enum_option_carries_its_values_inline() -> None:
    (detail,) = (spec for spec in describe_options(Rich()) if spec.name == "detail")

    schema = json.loads(detail.json_schema)
    assert "$ref" not in detail.json_schema
    assert schema["anyOf"][0]["enum"] == ["low", "high"]
    assert detail.type == "string"


def test_options_pydantic_cannot_describe_still_list_their_names() -> None:
    specs = describe_options(Opaque())

    assert [(spec.name, spec.type, spec.description) for spec in specs] == [
        ("handler", "", "A callable"),
        ("level", "", ""),
    ]


def test_a_model_without_an_options_class_has_none() -> None:
    assert describe_options(object()) == ()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"temperature": 3}, "temperature: Input should be less than or equal to 2"),
        ({"detail": "ultra"}, "detail: Input should be 'low' or 'high'"),
        ({"stop": 5}, "stop"),
        ({"tempreature": 0.1}, "tempreature: Extra inputs are not permitted"),
    ],
)
def test_invalid_values_are_named_with_every_valid_option(
    options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidOptions) as raised:
        check_options("rich", Rich(), options)

    message = raised.value.message
    assert problem in message
    assert (
        "Its options: temperature (number), stop (string|array), detail (string), "
        "undocumented (integer)"
    ) in message


def test_valid_options_and_no_options_pass() -> None:
    check_options("rich", Rich(), {"temperature": 0.5, "stop": ["a"], "detail": "low"})
    check_options("rich", Rich(), {})


def test_problems_beyond_ten_are_counted_not_listed() -> None:
    with pytest.raises(InvalidOptions) as raised:
        check_options("rich", Rich(), {f"unknown_{n:02}": n for n in range(13)})

    assert "unknown_09" in raised.value.message
    assert "unknown_10" not in raised.value.message
    assert "and 3 more" in raised.value.message
