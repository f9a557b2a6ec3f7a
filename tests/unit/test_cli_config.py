"""`llm-proxy config show|validate` and the help of every command, through click's CliRunner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from infrastructure.cli import main
from infrastructure.config import Settings, load_settings, to_plain


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own LLM_PROXY_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("LLM_PROXY_"):
            monkeypatch.delenv(name)


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- config show


def test_show_prints_the_defaults_as_yaml() -> None:
    result = invoke("config", "show")

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == to_plain(Settings())


def test_show_reflects_environment_overrides() -> None:
    env = {"LLM_PROXY_SERVER__PORT": "5555", "LLM_PROXY_MODELS__SERVE": "[echo, markov]"}

    result = invoke("config", "show", env=env)

    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["server"]["port"] == 5555
    assert shown["models"]["serve"] == ["echo", "markov"]
    assert shown == to_plain(load_settings(environ=env))


@pytest.mark.parametrize("flag", ["--config", "-c"])
def test_show_layers_environment_over_the_file(tmp_path: Path, flag: str) -> None:
    config = write(tmp_path, "c.yaml", "server: {port: 1111, name: from-file}\n")

    result = invoke("config", "show", flag, str(config), env={"LLM_PROXY_SERVER__PORT": "2222"})

    assert result.exit_code == 0, result.output
    server = yaml.safe_load(result.stdout)["server"]
    assert (server["port"], server["name"]) == (2222, "from-file")


def test_show_takes_the_file_from_llm_proxy_config(tmp_path: Path) -> None:
    config = write(tmp_path, "c.yaml", "logging: {level: debug}\n")

    result = invoke("config", "show", env={"LLM_PROXY_CONFIG": str(config)})

    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["logging"]["level"] == "DEBUG"


def test_show_with_bad_configuration_exits_2_and_names_the_key() -> None:
    result = invoke("config", "show", env={"LLM_PROXY_LOGGING__LEVEL": "LOUD"})

    assert result.exit_code == 2
    assert "logging.level" in result.stderr
    assert "'LOUD'" in result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------- config validate


def test_validate_good_file(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", "server:\n  port: 50052\nmodels:\n  default: echo\n")

    result = invoke("config", "validate", str(good))

    assert result.exit_code == 0, result.output
    first, caveat = result.stdout.strip().splitlines()
    assert first.startswith(f"{good}: valid; serves ")
    assert first.endswith("(default echo)")
    assert "llm-echo" in caveat
    assert "a server with other plugins or keys may serve a different set" in caveat


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        (
            "{serve: [echo], aliases: {fast: markov}}",
            "models.aliases.fast: points at 'markov', which is not served; served: echo",
        ),
        ("{serve: [echo], default: markov}", "models.default: 'markov' is not served"),
        ("{serve: [no-such-model]}", "models.serve[0]: 'no-such-model' is not a model llm knows"),
    ],
)
def test_validate_checks_the_models_section_against_what_llm_serves_here(
    tmp_path: Path, models: str, problem: str
) -> None:
    unserved = write(tmp_path, "unserved.yaml", f"models: {models}\n")

    result = invoke("config", "validate", str(unserved))

    assert result.exit_code == 2
    assert problem in result.stderr
    # It cannot know the server's own plugins and keys, and says so.
    assert "checked against the llm plugins and keys of this environment" in result.stderr
    assert "valid" not in result.stdout


def test_validate_can_skip_the_models_section(tmp_path: Path) -> None:
    elsewhere = write(tmp_path, "elsewhere.yaml", "models: {serve: [gpt-9-elsewhere]}\n")

    result = invoke("config", "validate", "--skip-models", str(elsewhere))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{elsewhere}: valid (models section not checked)"


def test_validate_bad_file_exits_2_and_names_each_key(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "server:\n  port: 99999\nlimits:\n  timeout: 3\n")

    result = invoke("config", "validate", str(bad))

    assert result.exit_code == 2
    assert "server.port" in result.stderr
    assert "99999" in result.stderr
    assert "limits.timeout: unknown key" in result.stderr
    assert "valid" not in result.stdout


def test_validate_applies_the_environment_on_top(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", "server: {port: 1}\n")

    result = invoke("config", "validate", str(good), env={"LLM_PROXY_SERVER__PORT": "x"})

    assert result.exit_code == 2
    assert "server.port" in result.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    result = invoke("config", "validate", str(tmp_path / "nope.yaml"))

    assert result.exit_code == 2
    assert "cannot read config file" in result.stderr


def test_validate_invalid_yaml(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.yaml", "server: [\n")

    result = invoke("config", "validate", str(broken))

    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr


def test_validate_needs_a_file_argument() -> None:
    result = invoke("config", "validate")

    assert result.exit_code == 2
    assert "Missing argument 'FILE'" in result.stderr


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["config", "serve"]),
        (("config",), ["show", "validate"]),
        (("config", "show"), ["--config"]),
        (("config", "validate"), ["FILE"]),
        (("serve",), ["--config", "--host", "--port", "--log-level"]),
    ],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(args: tuple[str, ...], expected: list[str], flag: str) -> None:
    result = invoke(*args, flag)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    for word in expected:
        assert word in result.stdout


def test_version() -> None:
    result = invoke("--version")

    assert result.exit_code == 0, result.output
    assert "version" in result.stdout
