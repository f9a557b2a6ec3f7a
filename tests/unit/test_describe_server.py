"""DescribeServer: what a caller may use, and under which limits."""

from __future__ import annotations

import pytest

from domain.catalog import Catalog
from domain.policy import Limits
from domain.principal import CallContext, Principal
from tests.unit.fakes import Harness, model, sample_catalog


@pytest.fixture
def h() -> Harness:
    return Harness()


def as_principal(*allowed: str) -> CallContext:
    return CallContext(Principal("carol", allowed_models=allowed))


def test_anonymous_callers_see_everything(h: Harness) -> None:
    h.set_limits(
        Limits(
            max_input_length=123,
            request_timeout_seconds=7.5,
            max_concurrent_requests=4,
            max_requests_per_minute=60,
        )
    )

    description = h.describe(CallContext())

    assert description.server_name == "test-proxy"
    assert description.server_version == "9.9.9"
    assert [m.model_id for m in description.models] == ["echo", "small", "large"]
    assert description.models == sample_catalog().models
    assert description.default_model == "echo"
    assert dict(description.aliases) == {"fast": "small", "big": "large"}
    assert description.limits == Limits(
        max_input_length=123,
        request_timeout_seconds=7.5,
        max_concurrent_requests=4,
        max_requests_per_minute=60,
    )


@pytest.mark.parametrize(
    ("allowed", "models", "aliases"),
    [
        (("small",), ["small"], {"fast": "small"}),
        (("fast",), ["small"], {"fast": "small"}),
        (("*a*",), ["small", "large"], {"fast": "small", "big": "large"}),
        (("b?g", "echo"), ["echo", "large"], {"big": "large"}),
        (("e*",), ["echo"], {}),
        ((), [], {}),
        (("nothing-matches",), [], {}),
    ],
)
def test_models_and_aliases_are_filtered_by_principal(
    h: Harness, allowed: tuple[str, ...], models: list[str], aliases: dict[str, str]
) -> None:
    description = h.describe(as_principal(*allowed))

    assert [m.model_id for m in description.models] == models
    assert dict(description.aliases) == aliases


def test_each_call_reads_the_current_catalog_and_policy(h: Harness) -> None:
    h.describe(CallContext())
    h.catalog.replace(Catalog(models=(model("solo"),), default_model="solo"))
    h.set_limits(Limits(request_timeout_seconds=1.0))

    description = h.describe(CallContext())

    assert [m.model_id for m in description.models] == ["solo"]
    assert description.default_model == "solo"
    assert dict(description.aliases) == {}
    assert description.limits.request_timeout_seconds == 1.0


def test_an_empty_catalog_is_described(h: Harness) -> None:
    h.catalog.replace(Catalog(models=(), default_model=""))

    description = h.describe(CallContext())

    assert description.models == ()
    assert description.default_model == ""
