"""Issue 10 item 13: /metrics has no authentication, so binding it beyond loopback must be an
explicit choice (metrics.allow_public), refused otherwise before anything listens."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from infrastructure.config.loader import ConfigError, load_settings
from tests.security.served import clean_env, serve
from tests.support.commands import run_cli

PUBLIC = (
    "server:\n  port: 0\nauth:\n  enabled: false\n"
    "metrics:\n  enabled: true\n  port: 0\n  host: {host}\n"
)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "metrics.example"])
def test_a_public_metrics_host_is_a_configuration_error(tmp_path: Path, host: str) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(PUBLIC.format(host=f"'{host}'"))

    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})

    assert "metrics.host" in str(caught.value)
    assert "metrics.allow_public: true" in str(caught.value)


def test_serve_refuses_to_start_before_listening(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(PUBLIC.format(host="0.0.0.0"))

    result = run_cli("serve", "--config", str(config), env=clean_env(tmp_path / "xdg"))

    assert result.returncode == 2, result.stderr
    assert "metrics.host" in result.stderr
    assert "listening on" not in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_off_or_on_loopback_need_no_flag(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text("metrics:\n  enabled: false\n  host: 0.0.0.0\n")
    assert load_settings(config, environ={}).metrics.host == "0.0.0.0"
    config.write_text("metrics:\n  enabled: true\n  host: '::1'\n")
    assert load_settings(config, environ={}).metrics.enabled


def test_allowed_explicitly_it_serves_beyond_loopback(tmp_path: Path) -> None:
    config = PUBLIC.format(host="0.0.0.0") + "  allow_public: true\n"
    with serve(config, tmp_path) as served:
        assert served.metrics_port is not None
        url = f"http://127.0.0.1:{served.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"llm_proxy_worker_up" in response.read()
