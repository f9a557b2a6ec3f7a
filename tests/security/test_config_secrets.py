"""Issue 10 item 9: a secret in a configuration that fails validation is never printed, at
start or on reload, whatever type YAML or the environment gave it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from infrastructure.config.loader import ConfigError, load_settings
from infrastructure.server_runner import build_container, start
from tests.security.served import clean_env
from tests.support.commands import run_cli

# What YAML reads as a number: the digits must appear nowhere in any message.
NUMERIC_SECRET = "314159265358979323846264338327950288"
LIST_PARTS = ("first-half-of-the-secret-value", "second-half-of-the-secret-value")


def _problems(config_text: str, tmp_path: Path, **environ: str) -> str:
    config = tmp_path / "proxy.yaml"
    config.write_text(config_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=environ)
    return str(caught.value)


def test_a_numeric_secret_in_yaml_is_named_but_not_shown(tmp_path: Path) -> None:
    message = _problems(f"auth:\n  secret: {NUMERIC_SECRET}\n", tmp_path)

    assert "auth.secret: Not a valid string." in message
    assert "(got *** (a int))" in message
    assert NUMERIC_SECRET[:6] not in message


def test_a_list_secret_from_the_environment_is_not_shown(tmp_path: Path) -> None:
    message = _problems("", tmp_path, LLM_PROXY_AUTH__SECRET=f"[{LIST_PARTS[0]}, {LIST_PARTS[1]}]")

    assert "auth.secret: Not a valid string." in message
    assert not any(part in message for part in LIST_PARTS)


def test_a_secret_in_a_key_list_entry_is_not_shown(tmp_path: Path) -> None:
    # Wrong twice over: a number, and given beside a public key, which the schema refuses
    # with an error attached to the secret field.
    message = _problems(
        f"auth:\n  keys:\n    - {{id: a, secret: {NUMERIC_SECRET}, public_key: pem}}\n", tmp_path
    )

    assert "auth.keys.0.secret" in message
    assert NUMERIC_SECRET[:6] not in message


def test_a_yaml_syntax_error_does_not_quote_the_line(tmp_path: Path) -> None:
    # PyYAML's own message quotes the offending line, which here is the secret's.
    message = _problems('auth:\n  secret: "unterminated-super-secret-value\n', tmp_path)

    assert "is not valid YAML" in message
    assert "line" in message
    assert "super-secret" not in message


def test_serve_refuses_it_at_start_without_printing_it(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(f"server:\n  port: 0\nauth:\n  secret: {NUMERIC_SECRET}\n")

    result = run_cli("serve", "--config", str(config), env=clean_env(tmp_path / "xdg"))

    assert result.returncode == 2
    assert "auth.secret" in result.stderr
    assert NUMERIC_SECRET[:6] not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_a_reload_rejects_it_without_logging_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "proxy.yaml"
    good = "server:\n  port: 0\n  host: 127.0.0.1\nauth:\n  enabled: false\n"
    config.write_text(good)
    settings = load_settings(config, environ={})
    container = build_container(
        settings, loader=lambda: load_settings(config, environ={}), config_path=config
    )
    running = await start(container)
    try:
        config.write_text(good + f"  secret: {NUMERIC_SECRET}\n")
        with caplog.at_level(logging.INFO):
            applied = await container.reloader().reload_logged("SIGHUP")
        await asyncio.sleep(0)
    finally:
        await running.stop(0)
        container.gateway().close()

    assert applied is False
    logged = "\n".join(
        record.getMessage() + (str(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert "auth.secret" in logged
    assert NUMERIC_SECRET[:6] not in logged
