"""Domain values: catalog rules, usage and prices, principals, requests, errors."""

from __future__ import annotations

import pytest

from domain.catalog import Catalog
from domain.errors import InputTooLong, UnknownModel, UpstreamTimeout
from domain.policy import Limits, ServerPolicy
from domain.principal import ANONYMOUS, Principal
from domain.request import Message, PromptRequest, Role, ToolCall, ToolResult
from domain.usage import ModelPrice, Usage
from tests.unit.fakes import model, prompt_request, sample_catalog

# --------------------------------------------------------------------------- Catalog


def test_dangling_aliases_are_rejected_and_named() -> None:
    with pytest.raises(ValueError, match=r"not served: \['ghost', 'zombie'\]"):
        Catalog(
            models=(model("a"),),
            default_model="a",
            aliases={"zombie": "nope", "ok": "a", "ghost": "gone"},
        )


def test_a_default_that_is_not_served_is_rejected() -> None:
    with pytest.raises(ValueError, match="'b' is not served"):
        Catalog(models=(model("a"),), default_model="b")


def test_the_default_must_be_a_model_id_not_an_alias() -> None:
    with pytest.raises(ValueError, match="'al' is not served"):
        Catalog(models=(model("a"),), default_model="al", aliases={"al": "a"})


def test_an_empty_catalog_accepts_any_default() -> None:
    catalog = Catalog(models=(), default_model="whatever")

    assert catalog.names() == ()
    with pytest.raises(UnknownModel) as caught:
        catalog.resolve(None)
    assert caught.value.requested == "whatever"
    assert "(none)" in caught.value.message


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("echo", "echo"),
        ("small", "small"),
        ("fast", "small"),
        ("big", "large"),
        (None, "echo"),
        ("", "echo"),
        (" \t", "echo"),
        ("  large\n", "large"),
    ],
)
def test_resolve(requested: str | None, expected: str) -> None:
    assert sample_catalog().resolve(requested).model_id == expected


def test_a_model_id_wins_over_an_alias_of_the_same_name() -> None:
    catalog = Catalog(models=(model("a"), model("b")), default_model="a", aliases={"a": "b"})

    assert catalog.resolve("a").model_id == "a"


def test_resolving_an_unknown_name_lists_every_name() -> None:
    catalog = sample_catalog()

    with pytest.raises(UnknownModel) as caught:
        catalog.resolve("Echo")

    error = caught.value
    assert error.code == "MODEL_NOT_FOUND"
    assert error.requested == "Echo"
    assert error.available == catalog.names()
    assert error.details == "echo, large, small, big, fast"
    assert "'Echo'" in error.message
    assert "echo, large, small, big, fast" in error.message


def test_names_are_sorted_ids_then_sorted_aliases() -> None:
    assert sample_catalog().names() == ("echo", "large", "small", "big", "fast")


def test_get_finds_ids_only() -> None:
    catalog = sample_catalog()

    small = catalog.get("small")
    assert small is not None
    assert small.model_id == "small"
    assert catalog.get("fast") is None


def test_the_catalog_is_a_snapshot() -> None:
    aliases = {"fast": "small"}
    catalog = Catalog(models=(model("small"),), default_model="small", aliases=aliases)

    aliases["late"] = "small"

    assert "late" not in catalog.aliases
    with pytest.raises(TypeError):
        catalog.aliases["x"] = "small"  # type: ignore[index]


# --------------------------------------------------------------------------- Usage and prices


@pytest.mark.parametrize(
    ("usage", "total"),
    [
        (Usage(), None),
        (Usage(input_tokens=3), 3),
        (Usage(output_tokens=4), 4),
        (Usage(input_tokens=3, output_tokens=4), 7),
        (Usage(input_tokens=0, output_tokens=0), 0),
    ],
)
def test_total_tokens(usage: Usage, total: int | None) -> None:
    assert usage.total_tokens == total


@pytest.mark.parametrize(
    ("usage", "cost"),
    [
        (Usage(), None),
        (Usage(input_tokens=1_000_000), 3.0),
        (Usage(output_tokens=500_000), 7.5),
        (Usage(input_tokens=2_000, output_tokens=1_000), (2_000 * 3 + 1_000 * 15) / 1e6),
        (Usage(input_tokens=0, output_tokens=0), 0.0),
    ],
)
def test_price_cost(usage: Usage, cost: float | None) -> None:
    price = ModelPrice(input_per_million=3.0, output_per_million=15.0)

    assert price.cost(usage) == (pytest.approx(cost) if cost is not None else None)


def test_a_free_model_costs_zero_not_none() -> None:
    assert ModelPrice(0.0, 0.0).cost(Usage(input_tokens=10, output_tokens=10)) == 0.0


def test_policy_prices_are_looked_up_by_model_id_and_frozen() -> None:
    prices = {"small": ModelPrice(1.0, 2.0)}
    policy = ServerPolicy(server_name="s", server_version="1", prices=prices)
    prices["large"] = ModelPrice(9.0, 9.0)

    assert policy.price_for("small") == ModelPrice(1.0, 2.0)
    assert policy.price_for("large") is None
    assert policy.price_for("fast") is None


# --------------------------------------------------------------------------- Principal


@pytest.mark.parametrize(
    ("allowed", "may"),
    [
        (None, True),
        ((), False),
        (("small",), True),
        (("fast",), True),
        (("sm*",), True),
        (("f?st",), True),
        (("[st]mall",), True),
        (("*",), True),
        (("large", "echo"), False),
        (("Small",), False),
        (("smal",), False),
        (("small-*",), False),
    ],
)
def test_may_use(allowed: tuple[str, ...] | None, may: bool) -> None:
    small = model("small", aliases=("fast", "quick"))

    assert Principal("p", allowed_models=allowed).may_use(small) is may


def test_anonymous_may_use_anything() -> None:
    assert ANONYMOUS.may_use(model("anything"))
    assert ANONYMOUS.subject == "anonymous"


# --------------------------------------------------------------------------- requests, errors


def test_input_length_counts_every_text_and_tool_output() -> None:
    request = PromptRequest(
        messages=(
            Message.of_text(Role.SYSTEM, "f", "ghij"),
            Message.of_text(Role.USER, "ab", "cde"),
            Message(Role.ASSISTANT, (ToolCall("t", {"long": "x" * 50}, "c"),)),
            Message(Role.TOOL, (ToolResult("c", "t", "12345"),)),
        )
    )

    # Tool call arguments are the model's own output, not the client's input.
    assert request.input_length() == 15


def test_validate_without_a_limit_accepts_any_length() -> None:
    prompt_request("x" * 10_000).validate(Limits(max_input_length=None))


def test_input_too_long_explains_itself() -> None:
    error = InputTooLong(12, 10)

    assert error.code == "INPUT_TOO_LONG"
    assert error.details == "length=12 limit=10"
    assert "12" in error.message
    assert "10" in error.message


def test_upstream_timeout_message_shows_the_seconds() -> None:
    assert "within 2.5s" in UpstreamTimeout(2.5).message
    assert "within 300s" in UpstreamTimeout(300.0).message
