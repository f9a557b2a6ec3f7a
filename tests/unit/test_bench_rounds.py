"""How long a comparison measures, and in which order it measures its sides, round by round."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from bench.scenarios import round_orders
from bench.session import FULL, longer


def test_two_sides_alternate() -> None:
    assert round_orders(2, 4) == [[0, 1], [1, 0], [0, 1], [1, 0]]


@pytest.mark.parametrize("sides", [3, 4, 5])
def test_every_side_runs_in_every_place_and_after_every_other_equally_often(sides: int) -> None:
    orders = round_orders(sides, 4)
    assert len(orders) >= 4
    assert all(sorted(order) == list(range(sides)) for order in orders)
    places = Counter((place, side) for order in orders for place, side in enumerate(order))
    assert len(set(places.values())) == 1 and len(places) == sides * sides
    follows = Counter(pair for order in orders for pair in pairwise(order))
    assert len(set(follows.values())) == 1 and len(follows) == sides * (sides - 1)


def test_at_least_the_rounds_asked_for_in_whole_designs() -> None:
    assert len(round_orders(2, 5)) == 6
    assert len(round_orders(3, 7)) == 12
    assert len(round_orders(3, 1)) == 6


def test_longer_measures_as_long_again_in_as_many_more_rounds() -> None:
    assert longer(FULL, 1) is FULL
    three = longer(FULL, 3)
    assert (three.duration_s, three.rounds) == (FULL.duration_s * 3, FULL.rounds * 3)
    assert three.duration_s / three.rounds == FULL.duration_s / FULL.rounds
    assert three.name == "full-x3"
