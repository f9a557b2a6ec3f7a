"""Value objects compare and hash by value, carry no __dict__, and cannot be assigned to as
far as the type checker is concerned (the check CI runs)."""

from __future__ import annotations

import textwrap
from dataclasses import field
from pathlib import Path

from mypy import api

from domain.request import Message, Role, Text
from domain.value import value_object


@value_object
class _Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default=(), compare=False, hash=False)


def test_equal_by_value_and_hashable_like_a_frozen_dataclass() -> None:
    assert _Point(1, 2) == _Point(1, 2, tags=("a",))
    assert _Point(1, 2) != _Point(2, 1)
    assert hash(_Point(1, 2)) == hash(_Point(1, 2, tags=("b",)))
    assert len({_Point(1, 2), _Point(1, 2), _Point(3)}) == 2
    assert not hasattr(_Point(1), "__dict__")


def test_domain_values_stay_usable_as_keys() -> None:
    message = Message.of_text(Role.USER, "hi")
    assert {message: 1}[Message(Role.USER, (Text("hi"),))] == 1


def test_the_type_checker_refuses_assignment_to_a_field(tmp_path: Path) -> None:
    source = tmp_path / "assigns.py"
    source.write_text(
        textwrap.dedent(
            """
            from domain.value import value_object

            @value_object
            class Point:
                x: int

            point = Point(1)
            point.x = 2
            """
        )
    )
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    assert status == 1
    assert 'Property "x" defined in "Point" is read-only' in out
