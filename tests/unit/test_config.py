"""Configuration: sources and their precedence, validation messages, plain round trip."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from marshmallow import Schema, fields

from domain.policy import Limits
from infrastructure.config import ConfigError, Settings, load_settings, to_plain
from infrastructure.config.loader import (
    _mask,
    _resolve_secret_files,
    _secret_fields,
    deep_merge,
    from_environment,
    validate,
)
from infrastructure.config.schema import SettingsSchema
from infrastructure.config.settings import PriceSettings


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(
    config_file: Path | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    return load_settings(config_file, environ=env or {}, overrides=overrides)


def problems(
    config_file: Path | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load(config_file, env, overrides)
    return caught.value.problems


def only_problem(
    config_file: Path | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    found = problems(config_file, env, overrides)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- sources


def test_defaults() -> None:
    settings = load()

    assert settings == Settings()
    # The schema's defaults are the policy's own, not a copy of them.
    assert settings.limits == Limits()
    assert settings.server.port == 50051
    assert settings.models.serve is None
    assert settings.limits.max_input_length == 1_000_000
    assert settings.logging.level == "INFO"


def test_file_overrides_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, "server:\n  port: 1111\nlogging:\n  level: debug\n")

    settings = load(config)

    assert settings.server.port == 1111
    assert settings.server.host == "127.0.0.1"
    assert settings.logging.level == "DEBUG"


def test_precedence_defaults_file_env_overrides(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "server:\n  port: 1111\n  host: 0.0.0.0\n  name: from-file\n"
        "limits:\n  request_timeout_seconds: 10\n",
    )
    env = {"LLM_PROXY_SERVER__PORT": "2222", "LLM_PROXY_SERVER__NAME": "from-env"}

    settings = load(config, env, {"server": {"port": 3333}})

    assert settings.server.port == 3333  # override > env > file
    assert settings.server.name == "from-env"  # env > file
    assert settings.server.host == "0.0.0.0"  # file > default
    assert settings.limits.request_timeout_seconds == 10.0
    assert settings.server.grace_period_seconds == 10.0  # default


def test_deep_merge_keeps_sibling_keys(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "models:\n  default: echo\n  aliases: {a: echo}\n"
        "  prices:\n    echo: {input_per_million: 1, output_per_million: 2}\n",
    )
    env = {
        "LLM_PROXY_MODELS__PRICES__MARKOV__INPUT_PER_MILLION": "3",
        "LLM_PROXY_MODELS__PRICES__MARKOV__OUTPUT_PER_MILLION": "4",
    }

    settings = load(config, env, {"models": {"aliases": {"b": "markov"}}})

    assert settings.models.default == "echo"
    assert dict(settings.models.aliases) == {"a": "echo", "b": "markov"}
    assert dict(settings.models.prices) == {
        "echo": PriceSettings(1.0, 2.0),
        "markov": PriceSettings(3.0, 4.0),
    }


def test_deep_merge_function() -> None:
    base = {"s": {"a": 1, "b": {"x": 1, "y": 2}}, "t": 1}
    merged = deep_merge(base, {"s": {"b": {"y": 3}, "c": 4}, "t": {"new": 1}})

    assert merged == {"s": {"a": 1, "b": {"x": 1, "y": 3}, "c": 4}, "t": {"new": 1}}
    assert base == {"s": {"a": 1, "b": {"x": 1, "y": 2}}, "t": 1}


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = write(tmp_path, "server: {port: 4444}\n")

    assert load(env={"LLM_PROXY_CONFIG": str(config)}).server.port == 4444


def test_an_explicit_config_file_wins_over_llm_proxy_config(tmp_path: Path) -> None:
    chosen = write(tmp_path, "server: {port: 5555}\n", "chosen.yaml")
    other = write(tmp_path, "server: {port: 6666}\n", "other.yaml")

    assert load(chosen, {"LLM_PROXY_CONFIG": str(other)}).server.port == 5555


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "# nothing set\n")) == Settings()


def test_a_section_with_every_key_commented_out_means_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, "server:\n  # port: 1234\nlogging:\n  level: ERROR\n")

    settings = load(config)

    assert settings.server == Settings().server
    assert settings.logging.level == "ERROR"


# --------------------------------------------------------------------------- environment


def test_env_list_and_mapping_use_yaml_flow_syntax() -> None:
    env = {
        "LLM_PROXY_MODELS__SERVE": "[echo, 'gpt-4o*']",
        "LLM_PROXY_MODELS__ALIASES": "{fast: echo, smart: gpt-4o}",
        "LLM_PROXY_MODELS__PLUGIN_MODULES": "[]",
    }

    models = load(env=env).models

    assert models.serve == ("echo", "gpt-4o*")
    assert dict(models.aliases) == {"fast": "echo", "smart": "gpt-4o"}
    assert models.plugin_modules == ()


def test_env_scalars_stay_strings_for_the_schema_to_coerce() -> None:
    env = {
        "LLM_PROXY_SERVER__NAME": "yes",
        "LLM_PROXY_LOGGING__LOG_PROMPTS": "true",
        "LLM_PROXY_LIMITS__REQUEST_TIMEOUT_SECONDS": "2.5",
    }

    assert from_environment(env) == {
        "server": {"name": "yes"},
        "logging": {"log_prompts": "true"},
        "limits": {"request_timeout_seconds": "2.5"},
    }
    settings = load(env=env)
    assert settings.server.name == "yes"
    assert settings.logging.log_prompts is True
    assert settings.limits.request_timeout_seconds == 2.5


@pytest.mark.parametrize("null", ["null", "NULL", "None", "~", " null "])
def test_env_null_clears_a_value(tmp_path: Path, null: str) -> None:
    config = write(tmp_path, "limits: {max_input_length: 10}\nmodels: {serve: [a]}\n")
    env = {"LLM_PROXY_LIMITS__MAX_INPUT_LENGTH": null, "LLM_PROXY_MODELS__SERVE": null}

    settings = load(config, env)

    assert settings.limits.max_input_length is None
    assert settings.models.serve is None


def test_env_null_on_a_required_value_is_an_error() -> None:
    problem = only_problem(env={"LLM_PROXY_SERVER__PORT": "null"})

    assert problem.startswith("server.port: ")


def test_env_without_nesting_is_not_configuration() -> None:
    env = {
        "LLM_PROXY_URL": "grpc://elsewhere:1",
        "LLM_PROXY_TOKEN": "secret",
        "LLM_PROXY_": "x",
        "LLM_PROXY_SERVER__": "x",
        "OTHER__SERVER__PORT": "1",
        "llm_proxy_server__port": "1",
    }

    assert from_environment(env) == {}
    assert load(env=env) == Settings()


def test_env_names_are_case_folded_to_keys() -> None:
    assert from_environment({"LLM_PROXY_SERVER__MAX_MESSAGE_BYTES": "2048"}) == {
        "server": {"max_message_bytes": "2048"}
    }


def test_malformed_flow_syntax_is_kept_as_text_and_reported() -> None:
    problem = only_problem(env={"LLM_PROXY_MODELS__SERVE": "[echo"})

    assert problem.startswith("models.serve: ")
    assert "'[echo'" in problem


# --------------------------------------------------------------------------- validation


def test_unknown_key_is_named() -> None:
    problem = only_problem(overrides={"server": {"prot": 1}})

    assert problem.startswith("server.prot: unknown key")


def test_unknown_section_is_named(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "sever: {port: 1}\n"))

    assert problem.startswith("sever: unknown key")


def test_unknown_key_from_env() -> None:
    problem = only_problem(env={"LLM_PROXY_LIMITS__TIMEOUT": "5"})

    assert problem.startswith("limits.timeout: unknown key")


@pytest.mark.parametrize(
    ("overrides", "key", "shown"),
    [
        ({"server": {"port": "abc"}}, "server.port", "'abc'"),
        ({"server": {"port": 70000}}, "server.port", "70000"),
        ({"server": {"port": -1}}, "server.port", "-1"),
        ({"server": {"host": ""}}, "server.host", "''"),
        ({"limits": {"request_timeout_seconds": 0}}, "limits.request_timeout_seconds", "0"),
        ({"limits": {"max_input_length": "many"}}, "limits.max_input_length", "'many'"),
        ({"limits": {"max_concurrent_per_subject": 0}}, "limits.max_concurrent_per_subject", "0"),
        ({"logging": {"level": "LOUD"}}, "logging.level", "'LOUD'"),
        ({"logging": {"format": "xml"}}, "logging.format", "'xml'"),
        ({"logging": {"log_prompts": "perhaps"}}, "logging.log_prompts", "'perhaps'"),
        ({"models": {"serve": "echo"}}, "models.serve", "'echo'"),
        ({"models": {"max_threads": 0}}, "models.max_threads", "0"),
        ({"models": {"aliases": {"fast": ""}}}, "models.aliases.fast", "''"),
        ({"server": 5}, "server", "5"),
        ({"models": ["echo"]}, "models", "['echo']"),
    ],
)
def test_bad_values_name_the_key_and_show_the_value(
    overrides: dict[str, Any], key: str, shown: str
) -> None:
    problem = only_problem(overrides=overrides)

    assert problem.startswith(f"{key}: "), problem
    assert problem.endswith(f"(got {shown})"), problem


def test_port_range_message() -> None:
    assert "must be a TCP port from 0 to 65535" in only_problem(
        env={"LLM_PROXY_SERVER__PORT": "65536"}
    )


def test_port_bounds_are_accepted() -> None:
    assert load(overrides={"server": {"port": 0}}).server.port == 0
    assert load(overrides={"server": {"port": "65535"}}).server.port == 65535


def test_log_level_lists_the_choices_and_is_case_insensitive() -> None:
    problem = only_problem(overrides={"logging": {"level": "verbose"}})

    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in problem
    assert load(overrides={"logging": {"level": "warning"}}).logging.level == "WARNING"


def test_missing_price_field_is_named(tmp_path: Path) -> None:
    config = write(tmp_path, "models:\n  prices:\n    gpt-4o:\n      input_per_million: 2.5\n")

    problem = only_problem(config)

    assert problem.startswith("models.prices.gpt-4o.output_per_million: ")
    assert "Missing data" in problem


def test_an_empty_alias_name_is_shown_as_the_bad_value() -> None:
    problem = only_problem(overrides={"models": {"aliases": {"": "echo"}}})

    assert problem.startswith("models.aliases.")
    assert problem.endswith("(got '')"), problem


def test_keys_named_key_or_value_keep_their_place_in_the_path() -> None:
    problem = only_problem(overrides={"models": {"prices": {"value": {"input_per_million": 1}}}})

    assert problem.startswith("models.prices.value.output_per_million: "), problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = write(tmp_path, "server: {port: x, bogus: 1}\nlogging: {level: LOUD}\n")

    found = problems(config, {"LLM_PROXY_LIMITS__MAX_INPUT_LENGTH": "-5"})

    keys = sorted(problem.split(":")[0] for problem in found)
    assert keys == ["limits.max_input_length", "logging.level", "server.bogus", "server.port"]


def test_config_error_message_lists_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        load(overrides={"server": {"port": "x"}})

    assert str(caught.value).startswith("invalid configuration:\n  - server.port: ")


# --------------------------------------------------------------------------- files


def test_non_mapping_yaml(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "- server\n- port\n"))

    assert "must hold a mapping of sections, not a list" in problem
    assert "config.yaml" in problem


def test_scalar_yaml(tmp_path: Path) -> None:
    assert "not a str" in only_problem(write(tmp_path, "just text\n"))


def test_invalid_yaml(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, "server: {port: 1\n"))

    assert "config.yaml is not valid YAML" in problem


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"

    problem = only_problem(missing)

    assert problem.startswith(f"cannot read config file {missing}")
    assert "No such file" in problem


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root.
    problem = only_problem(tmp_path)

    assert problem.startswith(f"cannot read config file {tmp_path}")


# --------------------------------------------------------------------------- plain output


def test_to_plain_round_trips() -> None:
    settings = load(
        overrides={
            "server": {"port": 1234, "name": "proxy-a"},
            "models": {
                "serve": ["echo", "markov"],
                "default": "echo",
                "aliases": {"m": "markov"},
                "prices": {"echo": {"input_per_million": 0.5, "output_per_million": 1}},
                "plugin_modules": ["my.plugin"],
            },
            "limits": {"max_input_length": None, "max_concurrent_requests": 3},
            "logging": {"level": "debug", "format": "json", "log_prompts": True},
        }
    )

    plain = to_plain(settings)

    assert plain["server"]["port"] == 1234
    assert plain["models"]["serve"] == ["echo", "markov"]
    assert plain["models"]["prices"] == {
        "echo": {"input_per_million": 0.5, "output_per_million": 1.0}
    }
    assert plain["logging"]["level"] == "DEBUG"
    assert validate(plain) == settings
    assert validate(yaml.safe_load(yaml.safe_dump(plain))) == settings


def test_to_plain_of_defaults_lists_every_key() -> None:
    plain = to_plain(Settings())

    # Every section of the schema, whichever exist; these ones at least.
    assert set(plain) == set(SettingsSchema().fields)
    assert {"limits", "logging", "metrics", "models", "server", "tracing"} <= set(plain)
    assert plain["server"] == {
        "host": "127.0.0.1",
        "port": 50051,
        "name": "llm-proxy",
        "grace_period_seconds": 10.0,
        "min_ping_interval_seconds": 10.0,
        "max_message_bytes": 16 * 1024 * 1024,
        "max_connection_idle_seconds": 300.0,
        "max_connection_age_seconds": 3600.0,
        "max_connection_age_grace_seconds": 300.0,
        "max_concurrent_streams": 1000,
        "tls": {"cert_file": None, "key_file": None, "client_ca_file": None},
        "allow_insecure_public": False,
        "health": True,
        "reflection": True,
        "workers": 1,
        "shutdown_delay_seconds": 0.0,
        "reload_on_change": False,
        "reload_check_seconds": 2.0,
    }
    assert plain["metrics"] == {
        "enabled": False,
        "host": "127.0.0.1",
        "port": 9464,
        "max_subjects": 100,
        "allow_public": False,
    }
    assert validate(plain) == Settings()


# --------------------------------------------------------------------------- secrets
# The settings schema has no secret field yet, so the machinery is exercised on a local one.


class _Credentials(Schema):
    user = fields.String()
    password = fields.String(allow_none=True, metadata={"secret": True})


class _Root(Schema):
    name = fields.String()
    auth = fields.Nested(_Credentials)
    api_key = fields.String(metadata={"secret": True})


def test_secret_fields_mirror_the_schema() -> None:
    assert _secret_fields(_Root()) == {"auth": {"password": True}, "api_key": True}


def test_settings_schema_secrets_are_discovered() -> None:
    from infrastructure.config.schema import SettingsSchema

    tree = _secret_fields(SettingsSchema())

    # Every section appears; a leaf is True only for fields marked secret.
    assert set(tree) == set(SettingsSchema().fields)
    assert {"server", "models", "limits", "logging", "metrics", "tracing"} <= set(tree)


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("  hunter2\n", encoding="utf-8")
    (tmp_path / "key").write_text("k-123", encoding="utf-8")
    for name in ("pw", "key"):
        (tmp_path / name).chmod(0o600)
    raw: dict[str, Any] = {
        "name": "n",
        "auth": {"user": "u", "password_file": str(tmp_path / "pw")},
        "api_key_file": str(tmp_path / "key"),
    }

    _resolve_secret_files(raw, _secret_fields(_Root()), "")

    assert raw == {"name": "n", "auth": {"user": "u", "password": "hunter2"}, "api_key": "k-123"}


def test_secret_file_set_to_null_is_dropped() -> None:
    raw: dict[str, Any] = {"auth": {"password_file": None}}

    _resolve_secret_files(raw, _secret_fields(_Root()), "")

    assert raw == {"auth": {}}


def test_unreadable_secret_file_names_the_key(tmp_path: Path) -> None:
    raw: dict[str, Any] = {"auth": {"password_file": str(tmp_path / "absent")}}

    with pytest.raises(ConfigError) as caught:
        _resolve_secret_files(raw, _secret_fields(_Root()), "")

    (problem,) = caught.value.problems
    assert problem.startswith("auth.password_file: cannot read secret file")
    assert "absent" in problem


def test_secrets_are_masked_and_empty_ones_left_alone() -> None:
    dumped: dict[str, Any] = {
        "name": "n",
        "auth": {"user": "u", "password": "hunter2"},
        "api_key": "",
    }

    _mask(dumped, _secret_fields(_Root()))

    assert dumped == {"name": "n", "auth": {"user": "u", "password": "***"}, "api_key": ""}


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("3", 3), ("auto", os.cpu_count() or 1)])
def test_server_workers_takes_a_count_or_auto(value: object, expected: int) -> None:
    assert validate({"server": {"workers": value}}).server.workers == expected


@pytest.mark.parametrize("value", [0, -1, "many", True, 1000])
def test_server_workers_rejects_nonsense(value: object) -> None:
    with pytest.raises(ConfigError, match=r"server\.workers"):
        validate({"server": {"workers": value}})


def test_tracing_exporter_must_be_known() -> None:
    with pytest.raises(ConfigError, match=r"tracing\.exporter"):
        validate({"tracing": {"exporter": "zipkin"}})


def test_none_choices_can_be_set_from_the_environment() -> None:
    # The environment spells "unset" as none/null; for these keys "none" is itself a choice.
    settings = load(
        env={"LLM_PROXY_LEDGER__BACKEND": "none", "LLM_PROXY_TRACING__EXPORTER": "none"}
    )
    assert settings.ledger.backend == "none"
    assert settings.tracing.exporter == "none"
    assert load().ledger.backend == "sqlite"
