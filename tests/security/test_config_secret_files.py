"""Issue 10 item 10: a secret file other users can read is refused at start, naming the key
and the chmod that fixes it; a world-readable TLS private key is at least warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrastructure import certificates
from tests.security.served import clean_env, serve
from tests.support.commands import run_cli
from tests.support.tokens import OTHER_SECRET, SECRET


def _secret(tmp_path: Path, name: str, value: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_shared_secret_file_others_can_read_stops_serve(tmp_path: Path, mode: int) -> None:
    secret = _secret(tmp_path, "jwt-secret", SECRET, mode)
    config = tmp_path / "proxy.yaml"
    config.write_text(f"server:\n  port: 0\nauth:\n  secret_file: {secret}\n")

    result = run_cli("serve", "--config", str(config), env=clean_env(tmp_path / "xdg"))

    assert result.returncode == 2, result.stderr
    assert "auth.secret_file" in result.stderr
    assert f"mode {mode:o}" in result.stderr
    assert f"chmod 600 {secret}" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_key_list_secret_file_others_can_read_stops_serve(tmp_path: Path) -> None:
    private = _secret(tmp_path, "a", SECRET, 0o600)
    shared = _secret(tmp_path, "b", OTHER_SECRET, 0o644)
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "server:\n  port: 0\nauth:\n  keys:\n"
        f"    - {{id: one, secret_file: {private}}}\n"
        f"    - {{id: two, secret_file: {shared}}}\n"
    )

    result = run_cli("serve", "--config", str(config), env=clean_env(tmp_path / "xdg"))

    assert result.returncode == 2, result.stderr
    assert "auth.keys.1.secret_file" in result.stderr
    assert f"chmod 600 {shared}" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_validate_refuses_it_too(tmp_path: Path) -> None:
    secret = _secret(tmp_path, "jwt-secret", SECRET, 0o644)
    config = tmp_path / "proxy.yaml"
    config.write_text(f"auth:\n  secret_file: {secret}\n")

    result = run_cli("config", "validate", str(config), env=clean_env(tmp_path / "xdg"))

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"chmod 600 {secret}" in result.stderr


def test_a_private_secret_file_serves(tmp_path: Path) -> None:
    secret = _secret(tmp_path, "jwt-secret", SECRET, 0o600)
    with serve(f"server:\n  port: 0\nauth:\n  secret_file: {secret}\n", tmp_path) as served:
        assert served.port > 0
        assert served.stop() == 0
    assert "accessible to other users" not in served.log


def test_a_world_readable_tls_key_is_warned_about(tmp_path: Path) -> None:
    pki = certificates.generate(("127.0.0.1",), (), days=1)
    cert = tmp_path / "server.pem"
    key = tmp_path / "server-key.pem"
    cert.write_bytes(pki.server.cert_pem)
    key.write_bytes(pki.server.key_pem)
    key.chmod(0o644)
    config = (
        "server:\n  port: 0\n"
        f"  tls: {{cert_file: {cert}, key_file: {key}}}\n"
        "auth:\n  enabled: false\n"
    )

    with serve(config, tmp_path) as served:
        log = served.wait_for(lambda log: "server.tls.key_file" in log)

    assert (
        f"WARNING llm_proxy.security: server.tls.key_file: {key} is readable by every user" in log
    )
    assert f"chmod 600 {key}" in log
