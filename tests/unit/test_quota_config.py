"""The quotas and ledger configuration: what is accepted, and how mistakes are named."""

from __future__ import annotations

import pytest

from infrastructure.config import ConfigError
from infrastructure.config.loader import validate
from infrastructure.runtime import policy_from


def problems(raw: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        validate(raw)
    return str(caught.value)


def test_rules_become_the_policy_with_limits_folded_into_the_defaults() -> None:
    settings = validate(
        {
            "limits": {"max_requests_per_minute": 60, "max_concurrent_requests": 10},
            "quotas": {
                "default": {"usd_per_day": 2.5},
                "subjects": {
                    "bot-*": {"tokens_per_minute": 900, "models": {"gpt*": {"usd_per_day": 1}}}
                },
                "teams": {"red": {"usd_per_month": 100}},
            },
        }
    )
    quotas = policy_from(settings, "1").quotas
    assert (quotas.default.requests_per_minute, quotas.default.concurrent) == (60, 5)
    assert (quotas.default.usd_per_day, quotas.server_concurrent) == (2.5, 10)
    (bots,) = quotas.subjects
    assert (bots.pattern, bots.limits.tokens_per_minute) == ("bot-*", 900)
    assert bots.models[0][0] == "gpt*"
    assert quotas.teams[0].limits.usd_per_month == 100


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"quotas": {"store": "redis"}}, "quotas.redis_url: the redis store needs redis_url"),
        (
            {"quotas": {"default": {"requests_per_minute": 5}}},
            "quotas.default.requests_per_minute: set the default in limits.max_requests_per_minute",
        ),
        ({"quotas": {"teams": {"red": {"usd_per_day": -1}}}}, "quotas.teams.red.usd_per_day"),
        ({"quotas": {"subjects": {"a": {"tokens_per_hour": 5}}}}, "unknown key"),
        ({"quotas": {"on_store_error": "maybe"}}, "quotas.on_store_error"),
        ({"ledger": {"backend": "postgres"}}, "ledger.postgres_dsn: the postgres backend needs"),
        ({"ledger": {"backend": "mongo"}}, "ledger.backend"),
    ],
)
def test_mistakes_are_named_by_their_key(raw: dict[str, object], expected: str) -> None:
    assert expected in problems(raw)


def test_a_dsn_is_masked_in_config_show() -> None:
    from infrastructure.config.loader import to_plain

    settings = validate(
        {"ledger": {"backend": "postgres", "postgres_dsn": "postgresql://u:pw@h/db"}}
    )
    assert "pw" not in str(to_plain(settings))
