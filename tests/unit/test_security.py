"""Secure defaults: the generated secret, key material, the exposure guard, notices, reloads."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jwt
import pytest

from domain.errors import AuthenticationFailed
from infrastructure.config.loader import validate
from infrastructure.config.settings import Settings
from infrastructure.security import (
    AuthReload,
    SecurityError,
    auth_interceptors,
    caller_identity,
    check_exposure,
    key_material,
    load_or_create_secret,
    server_credentials,
    startup_notice,
    token_verifier,
)
from tests.support.tokens import OTHER_SECRET, SECRET, claims, key_pair, sign


def settings(**sections: Any) -> Settings:
    return validate(sections)


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


# --------------------------------------------------------------------------- generated secret


def test_the_secret_is_generated_once_private_and_random(config_home: Path) -> None:
    first = key_material(settings().auth)
    second = key_material(settings().auth)

    path = config_home / "llm-proxy" / "jwt-secret"
    assert first.auto_secret == path and first.created
    assert second.auto_secret == path and not second.created
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    secret = path.read_text().strip()
    assert len(secret) >= 43  # 32 random bytes, base64url
    assert first.keys[0].material == second.keys[0].material == secret.encode()


def test_two_servers_generate_different_secrets(tmp_path: Path) -> None:
    one, _ = load_or_create_secret(tmp_path / "a" / "s")
    two, _ = load_or_create_secret(tmp_path / "b" / "s")
    assert one != two


def test_the_secret_path_can_be_configured(tmp_path: Path, config_home: Path) -> None:
    path = tmp_path / "elsewhere" / "secret"

    material = key_material(settings(auth={"auto_secret_file": str(path)}).auth)

    assert material.auto_secret == path
    assert path.exists()
    assert not (config_home / "llm-proxy").exists()


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("x" * 64)
    path.chmod(0o644)

    with pytest.raises(SecurityError, match="chmod 600"):
        load_or_create_secret(path)


def test_configured_keys_mean_no_generated_secret(config_home: Path) -> None:
    material = key_material(settings(auth={"secret": SECRET}).auth)

    assert material.auto_secret is None
    assert not config_home.exists()


def test_inspecting_never_creates_a_secret(config_home: Path) -> None:
    with pytest.raises(SecurityError, match="does not exist yet"):
        key_material(settings().auth, create=False)
    assert not config_home.exists()


def test_auth_off_builds_no_verifier_and_no_secret(config_home: Path) -> None:
    off = settings(auth={"enabled": False})

    assert token_verifier(off) is None
    assert auth_interceptors(caller_identity(off, None)) == []
    assert not config_home.exists()


def test_mutual_tls_without_jwt_still_installs_an_interceptor(tmp_path: Path) -> None:
    mtls = settings(
        auth={"enabled": False},
        server={"tls": {"cert_file": "c", "key_file": "k", "client_ca_file": "ca"}},
    )
    assert len(auth_interceptors(caller_identity(mtls, None))) == 1


def test_weak_configured_secrets_are_refused() -> None:
    with pytest.raises(SecurityError, match=r"auth\.secret: the HS256 secret is 5 bytes"):
        key_material(settings(auth={"secret": "short"}).auth)
    with pytest.raises(SecurityError, match=r"auth\.keys\.0 \(k\)"):
        key_material(settings(auth={"keys": [{"id": "k", "secret": "short"}]}).auth)


def test_public_keys_are_read_from_files(tmp_path: Path) -> None:
    pair = key_pair("ES256")
    (tmp_path / "k.pem").write_text(pair.public_pem)
    config = settings(
        auth={"keys": [{"algorithm": "ES256", "public_key_file": str(tmp_path / "k.pem")}]}
    )
    verifier = token_verifier(config)
    assert verifier is not None

    assert verifier.verify(sign(claims(), pair.private, "ES256")).subject == "alice"
    with pytest.raises(SecurityError, match="cannot read"):
        key_material(
            settings(
                auth={"keys": [{"algorithm": "ES256", "public_key_file": "/nonexistent"}]}
            ).auth
        )


# --------------------------------------------------------------------------- exposure


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_public_addresses_without_auth_are_refused(host: str) -> None:
    with pytest.raises(SecurityError, match="refusing to listen"):
        check_exposure(settings(auth={"enabled": False}), host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2", "[::1]"])
def test_loopback_without_auth_is_allowed_with_a_warning(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    check_exposure(settings(auth={"enabled": False}), host)

    assert "authentication is OFF" in caplog.text
    assert any(record.levelno == logging.WARNING for record in caplog.records)


def test_public_without_auth_can_be_forced_or_protected_by_mtls() -> None:
    check_exposure(
        settings(auth={"enabled": False}, server={"allow_insecure_public": True}), "0.0.0.0"
    )
    mtls = {"tls": {"cert_file": "c", "key_file": "k", "client_ca_file": "ca"}}
    check_exposure(settings(auth={"enabled": False}, server=mtls), "0.0.0.0")


def test_public_with_auth_but_no_tls_warns_about_clear_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check_exposure(settings(auth={"secret": SECRET}), "0.0.0.0")
    assert "clear text" in caplog.text


# --------------------------------------------------------------------------- notices


def test_development_mode_writes_a_working_short_lived_token_to_a_private_file(
    config_home: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    config = settings()
    verifier = token_verifier(config)
    assert verifier is not None

    notice = startup_notice(config, verifier, "127.0.0.1", 50051)

    assert notice is not None
    token_file = config_home / "llm-proxy" / "dev-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    principal = verifier.verify(token)
    assert principal.subject == "dev"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] <= 3600
    assert f"export LLM_PROXY_TOKEN=$(cat {token_file})" in notice
    assert "prompt -m echo" in notice
    # Neither the notice, the log nor anything else printed holds the token or the secret.
    secret = (config_home / "llm-proxy" / "jwt-secret").read_text().strip()
    printed = capsys.readouterr()
    for text in (notice, caplog.text, printed.out, printed.err):
        assert token not in text
        assert secret not in text
    assert "jwt-secret" in caplog.text


def test_each_start_replaces_the_development_token(config_home: Path) -> None:
    config = settings()
    token_file = config_home / "llm-proxy" / "dev-token"
    startup_notice(config, token_verifier(config), "127.0.0.1", 50051)
    token_file.write_text("stale\n")
    token_file.chmod(0o644)  # as if someone loosened it: the new file is private again
    startup_notice(config, token_verifier(config), "127.0.0.1", 50051)
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().count(".") == 2  # a JWT again, not the stale text
    # No temporary file is left behind.
    assert [path.name for path in token_file.parent.iterdir() if path.name.startswith(".")] == []


def test_other_ports_are_named_in_the_example_command(config_home: Path) -> None:
    config = settings()
    notice = startup_notice(config, token_verifier(config), "127.0.0.1", 6000)
    assert notice is not None
    assert "--server llm-proxy+insecure://127.0.0.1:6000" in notice


def test_under_tls_the_example_command_trusts_the_ca_beside_the_certificate(
    config_home: Path, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("server.pem", "server-key.pem", "ca.pem"):
        (certs / name).write_text("placeholder")
    tls = {"cert_file": str(certs / "server.pem"), "key_file": str(certs / "server-key.pem")}
    config = settings(server={"tls": tls})
    notice = startup_notice(config, token_verifier(config), "127.0.0.1", 6000)
    assert notice is not None
    assert f"--server llm-proxy://127.0.0.1:6000 --ca-bundle {certs / 'ca.pem'}" in notice
    # A certificate without a CA beside it is its own trust anchor (self-signed or a chain).
    (certs / "ca.pem").unlink()
    notice = startup_notice(config, token_verifier(config), "127.0.0.1", 6000)
    assert notice is not None
    assert f"--ca-bundle {certs / 'server.pem'}" in notice


def test_no_token_is_printed_with_configured_keys_or_on_public_addresses(
    config_home: Path,
) -> None:
    configured = settings(auth={"secret": SECRET})
    assert startup_notice(configured, token_verifier(configured), "127.0.0.1", 1) is None
    dev = settings()
    assert startup_notice(dev, token_verifier(dev), "0.0.0.0", 1) is None
    assert startup_notice(settings(auth={"enabled": False}), None, "127.0.0.1", 1) is None


# --------------------------------------------------------------------------- reload


def test_reload_swaps_keys_and_forgets_cached_tokens() -> None:
    before = settings(auth={"keys": [{"id": "a", "secret": SECRET}]})
    after = settings(auth={"keys": [{"id": "b", "secret": OTHER_SECRET}]})
    verifier = token_verifier(before)
    assert verifier is not None
    old = sign(claims(), SECRET, kid="a")
    verifier.verify(old)

    AuthReload(verifier).prepare(after)()

    with pytest.raises(AuthenticationFailed, match="rotated out"):
        verifier.verify(old)
    assert verifier.verify(sign(claims(), OTHER_SECRET, kid="b")).subject == "alice"


def test_an_invalid_reload_changes_nothing() -> None:
    verifier = token_verifier(settings(auth={"secret": SECRET}))
    assert verifier is not None

    with pytest.raises(SecurityError):
        AuthReload(verifier).prepare(settings(auth={"secret": "short"}))

    assert verifier.verify(sign(claims(), SECRET)).subject == "alice"


def test_switching_auth_on_or_off_waits_for_a_restart(caplog: pytest.LogCaptureFixture) -> None:
    AuthReload(None).prepare(settings())()
    assert "next restart" in caplog.text


# --------------------------------------------------------------------------- TLS files


def test_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    from infrastructure import certificates

    one = certificates.generate()
    two = certificates.generate()
    (tmp_path / "cert.pem").write_bytes(one.server.cert_pem)
    (tmp_path / "key.pem").write_bytes(two.server.key_pem)
    (tmp_path / "junk.pem").write_text("junk")

    def tls(cert: str, key: str) -> Settings:
        return settings(
            server={"tls": {"cert_file": str(tmp_path / cert), "key_file": str(tmp_path / key)}}
        )

    with pytest.raises(SecurityError, match="does not belong"):
        server_credentials(tls("cert.pem", "key.pem"))
    with pytest.raises(SecurityError, match="no PEM certificate"):
        server_credentials(tls("junk.pem", "key.pem"))
    with pytest.raises(SecurityError, match="cannot read"):
        server_credentials(tls("absent.pem", "key.pem"))
    assert server_credentials(settings()).credentials is None


def test_generated_key_files_are_written_privately(tmp_path: Path) -> None:
    # The umask must not matter: load_or_create_secret passes 0600 to open().
    old = os.umask(0)
    try:
        load_or_create_secret(tmp_path / "s")
    finally:
        os.umask(old)
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o600
