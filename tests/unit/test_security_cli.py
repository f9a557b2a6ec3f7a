"""`token issue`, `token inspect`, `certs generate`, and secrets in `config show`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt
import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography import x509

from infrastructure.cli import main
from tests.support.tokens import OTHER_SECRET, SECRET, claims, key_pair, sign


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("LLM_PROXY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- token issue


def test_issue_signs_with_the_configured_secret(tmp_path: Path) -> None:
    result = invoke(
        "token",
        "issue",
        "--subject",
        "ci-bot",
        "--expires-in",
        "30d",
        "--models",
        "echo,gpt-*",
        "--models",
        "markov",
        env={"LLM_PROXY_AUTH__SECRET": SECRET},
    )

    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert payload["sub"] == "ci-bot"
    assert payload["models"] == ["echo", "gpt-*", "markov"]
    assert payload["exp"] - payload["iat"] == 30 * 86400
    assert payload["jti"]
    assert SECRET not in result.output


def test_issue_without_models_allows_everything_and_takes_issuer_and_audience(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        f"auth:\n  secret: {SECRET}\n  issuer: https://me.test\n  audience: [llm-proxy]\n",
    )
    result = invoke("token", "issue", "-c", str(path), "-s", "svc")

    payload = jwt.decode(
        result.stdout.strip(),
        SECRET,
        algorithms=["HS256"],
        audience="llm-proxy",
        issuer="https://me.test",
    )
    assert "models" not in payload
    assert payload["exp"] - payload["iat"] == 86400


def test_issue_with_no_key_configured_generates_the_development_secret(tmp_path: Path) -> None:
    result = invoke("token", "issue", "--subject", "me")

    assert result.exit_code == 0, result.output
    secret_file = tmp_path / "xdg" / "llm-proxy" / "jwt-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert "generated a new JWT secret" in result.stderr
    secret = secret_file.read_text().strip()
    assert jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])["sub"] == "me"


def test_issue_picks_keys_by_id_and_names_them_in_kid(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "auth:\n  keys:\n"
        f"    - {{id: old, secret: {OTHER_SECRET}}}\n"
        f"    - {{id: new, secret: {SECRET}}}\n",
    )
    newest = invoke("token", "issue", "-c", str(path), "-s", "a").stdout.strip()
    old = invoke("token", "issue", "-c", str(path), "-s", "a", "--key-id", "old").stdout.strip()
    missing = invoke("token", "issue", "-c", str(path), "-s", "a", "--key-id", "nope")

    assert jwt.get_unverified_header(newest)["kid"] == "new"
    jwt.decode(newest, SECRET, algorithms=["HS256"])
    assert jwt.get_unverified_header(old)["kid"] == "old"
    jwt.decode(old, OTHER_SECRET, algorithms=["HS256"])
    assert missing.exit_code == 1
    assert "no shared-secret (HS*) key with id 'nope'" in missing.output


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_issue_with_a_private_key(tmp_path: Path, algorithm: str) -> None:
    pair = key_pair(algorithm)
    (tmp_path / "private.pem").write_bytes(pair.private_pem)

    result = invoke(
        "token", "issue", "-s", "svc", "--private-key", str(tmp_path / "private.pem"),
        "--key-id", "k1",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "kid": "k1", "typ": "JWT"}
    assert jwt.decode(token, pair.public_pem, algorithms=[algorithm])["sub"] == "svc"


@pytest.mark.parametrize("bad", ["soon", "0", "-5m", "3y"])
def test_issue_rejects_nonsense_lifetimes(bad: str) -> None:
    result = invoke("token", "issue", "-s", "x", "--expires-in", bad)
    assert result.exit_code == 2
    assert "is not a duration" in result.output


# --------------------------------------------------------------------------- token inspect


def test_inspect_shows_claims_and_accepts_a_good_token(tmp_path: Path) -> None:
    token = sign(claims("alice", models=["echo"]), SECRET)

    result = invoke("token", "inspect", token, env={"LLM_PROXY_AUTH__SECRET": SECRET})

    assert result.exit_code == 0, result.output
    assert '"alg": "HS256"' in result.stdout
    assert 'sub: "alice"' in result.stdout
    assert "UTC)" in result.stdout
    assert "verdict: accepted: subject 'alice', models: echo" in result.stdout


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (sign(claims(), OTHER_SECRET), "bad signature"),
        (sign(claims(exp=int(time.time()) - 3600), SECRET), "expired"),
        (sign(claims(aud="elsewhere"), SECRET), "audience"),
        ("garbage", "malformed token"),
    ],
)
def test_inspect_says_why_a_token_would_be_refused(token: str, reason: str) -> None:
    result = invoke("token", "inspect", token, env={"LLM_PROXY_AUTH__SECRET": SECRET})

    assert result.exit_code == 1
    assert "verdict: REJECTED" in result.stdout
    assert reason in result.stdout


def test_inspect_reads_the_token_from_stdin() -> None:
    result = invoke(
        "token",
        "inspect",
        "-",
        env={"LLM_PROXY_AUTH__SECRET": SECRET},
        stdin=sign(claims(), SECRET),
    )
    assert result.exit_code == 0
    assert "accepted" in result.stdout


def test_inspect_does_not_create_a_secret(tmp_path: Path) -> None:
    result = invoke("token", "inspect", sign(claims(), SECRET))

    assert result.exit_code == 1
    assert "does not exist yet" in result.stdout
    assert not (tmp_path / "xdg").exists()


def test_inspect_with_auth_off_says_tokens_are_not_checked() -> None:
    result = invoke(
        "token", "inspect", sign(claims(), SECRET), env={"LLM_PROXY_AUTH__ENABLED": "false"}
    )
    assert result.exit_code == 0
    assert "not checked" in result.stdout


# --------------------------------------------------------------------------- config show


def test_config_show_masks_every_secret(tmp_path: Path) -> None:
    (tmp_path / "key-secret").write_text(OTHER_SECRET + "\n")
    (tmp_path / "key-secret").chmod(0o600)
    path = config(
        tmp_path,
        "auth:\n  keys:\n"
        f"    - {{id: a, secret_file: {tmp_path / 'key-secret'}}}\n"
        f"    - {{id: b, secret: {SECRET}x}}\n",
    )

    result = invoke("config", "show", "-c", str(path), env={"LLM_PROXY_AUTH__SECRET": SECRET})

    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert OTHER_SECRET not in result.output
    shown = yaml.safe_load(result.stdout)["auth"]
    assert shown["secret"] == "***"
    assert [key["secret"] for key in shown["keys"]] == ["***", "***"]


def test_config_show_of_the_defaults_has_auth_on() -> None:
    shown = yaml.safe_load(invoke("config", "show").stdout)
    assert shown["auth"]["enabled"] is True
    assert shown["server"]["allow_insecure_public"] is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auth:\n  keys:\n    - {algorithm: RS256, secret: x}\n", "auth.keys.0.public_key"),
        ("auth:\n  keys:\n    - {algorithm: HS256}\n", "auth.keys.0.secret"),
        ("auth:\n  keys:\n    - {algorithm: none, secret: x}\n", "auth.keys.0.algorithm"),
        ("auth:\n  algorithm: RS256\n", "auth.algorithm"),
        ("auth:\n  keys: [{id: a, secret: x}, {id: a, secret: y}]\n", "key ids must be unique"),
        ("server:\n  tls: {cert_file: a.pem}\n", "server.tls.cert_file"),
        ("server:\n  tls: {client_ca_file: ca.pem}\n", "server.tls.client_ca_file"),
        ("auth:\n  secret_file: /nonexistent/secret\n", "auth.secret_file: cannot read"),
    ],
)
def test_bad_auth_and_tls_configuration_names_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    result = invoke("config", "validate", str(config(tmp_path, text)))

    assert result.exit_code == 2
    assert expected in result.output


# --------------------------------------------------------------------------- certs generate


def test_certs_generate_writes_a_ca_server_and_client(tmp_path: Path) -> None:
    out = tmp_path / "certs"

    result = invoke(
        "certs", "generate", "--out", str(out), "--host", "127.0.0.1", "--host", "proxy.lan",
        "--client", "alice",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    for private in ("ca-key.pem", "server-key.pem", "alice-key.pem"):
        assert (out / private).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    client = x509.load_pem_x509_certificate((out / "alice.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["proxy.lan"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    common_name = client.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    assert common_name[0].value == "alice"
    assert f"cert_file: {out / 'server.pem'}" in result.output


def test_certs_generate_defaults_to_loopback_names(tmp_path: Path) -> None:
    invoke("certs", "generate", "--out", str(tmp_path))
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # No client certificate unless asked for.
    assert sorted(p.name for p in tmp_path.glob("*-key.pem")) == ["ca-key.pem", "server-key.pem"]


def test_certs_generate_never_overwrites_silently(tmp_path: Path) -> None:
    assert invoke("certs", "generate", "--out", str(tmp_path)).exit_code == 0
    before = (tmp_path / "ca.pem").read_bytes()

    again = invoke("certs", "generate", "--out", str(tmp_path))
    forced = invoke("certs", "generate", "--out", str(tmp_path), "--force")

    assert again.exit_code == 1
    assert "--force" in again.output
    assert forced.exit_code == 0
    assert (tmp_path / "ca.pem").read_bytes() != before


def test_certs_generate_refuses_unsafe_client_names(tmp_path: Path) -> None:
    result = invoke("certs", "generate", "--out", str(tmp_path), "--client", "../evil")
    assert result.exit_code == 2
