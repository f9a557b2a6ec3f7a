"""`token issue`, `token inspect` and `certs generate`."""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from adapters.auth import (
    KeyProblem,
    SigningKey,
    algorithm_for_private_key,
    issue_token,
    unverified_contents,
)
from domain.errors import AuthenticationFailed
from infrastructure import certificates
from infrastructure.cli.common import config_option, load_or_exit
from infrastructure.security import SecurityError, build_verifier, key_material

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
REJECTED_STATUS = 1


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 12h, 30d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _split(values: tuple[str, ...]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@click.group("token")
def token_group() -> None:
    """Issue and inspect the JWT bearer tokens this server accepts."""


@token_group.command("issue")
@config_option
@click.option("--subject", "-s", required=True, help="Who the token is for (the sub claim).")
@click.option(
    "--expires-in", default="24h", show_default=True, help="Lifetime: 90s, 15m, 12h, 30d, 2w."
)
@click.option(
    "--models",
    multiple=True,
    help="Models it may use: ids, aliases or glob patterns, comma-separated. Default: all.",
)
@click.option("--team", help="The caller's team (the team claim): shared quotas and budgets.")
@click.option("--audience", multiple=True, help="aud claim. Default: the server's auth.audience.")
@click.option("--issuer", help="iss claim. Default: the server's auth.issuer.")
@click.option("--key-id", help="Sign with the configured key of this id (and name it in kid).")
@click.option(
    "--private-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="PEM private key for RS*/PS*/ES*/EdDSA setups, whose server holds only public keys.",
)
@click.option(
    "--algorithm", help="Algorithm for --private-key (default: chosen from the key's type)."
)
def issue(
    config: Path | None,
    subject: str,
    expires_in: str,
    models: tuple[str, ...],
    team: str | None,
    audience: tuple[str, ...],
    issuer: str | None,
    key_id: str | None,
    private_key: Path | None,
    algorithm: str | None,
) -> None:
    """Print a signed token on standard output.

    Without --private-key it signs with the server's shared secret: auth.secret, an HS* entry
    of auth.keys, or the generated development secret (created now if absent).
    """
    settings = load_or_exit(config)
    auth = settings.auth
    lifetime = parse_duration(expires_in)
    try:
        if private_key is not None:
            pem = private_key.read_bytes()
            key = SigningKey.private_key(pem, algorithm or algorithm_for_private_key(pem), key_id)
        else:
            material = key_material(auth)
            if material.created:
                click.echo(f"generated a new JWT secret in {material.auto_secret}", err=True)
            key = material.signing_key(key_id)
    except (SecurityError, KeyProblem) as exc:
        raise click.ClickException(str(exc)) from exc
    if not auth.enabled:
        click.echo("note: this server's auth.enabled is false; it does not check tokens", err=True)
    token = issue_token(
        key,
        subject=subject,
        expires_in_s=lifetime,
        models=_split(models) if models else None,
        team=team,
        audience=list(audience) or list(auth.audience or ()),
        issuer=issuer if issuer is not None else auth.issuer,
    )
    click.echo(token)


def _when(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
        return f"{value} ({moment:%Y-%m-%d %H:%M:%S} UTC)"
    return repr(value)


@token_group.command("inspect")
@config_option
@click.argument("token")
def inspect(config: Path | None, token: str) -> None:
    """Show TOKEN's header and claims, and whether this server would accept it and why not.

    TOKEN may be "-" to read it from standard input (keeps it out of shell history). Exits 0
    when the token is accepted, 1 when it is not.
    """
    if token == "-":  # noqa: S105  # the stdin marker, not a credential
        token = sys.stdin.read().strip()
    try:
        header, claims = unverified_contents(token)
    except Exception:
        # What exactly is wrong is the verifier's to say, below.
        header, claims = {}, {}
    click.echo("header: " + json.dumps(header, sort_keys=True))
    click.echo("claims:")
    for name in sorted(claims):
        value = claims[name]
        shown = _when(value) if name in ("exp", "iat", "nbf") else json.dumps(value)
        click.echo(f"  {name}: {shown}")
    settings = load_or_exit(config)
    if not settings.auth.enabled:
        click.echo("verdict: not checked: this server has auth.enabled: false")
        return
    try:
        verifier = build_verifier(settings.auth, key_material(settings.auth, create=False))
        principal = verifier.verify(token)
    except SecurityError as exc:
        click.echo(f"verdict: cannot check: {exc}")
        sys.exit(REJECTED_STATUS)
    except AuthenticationFailed as exc:
        click.echo(f"verdict: REJECTED: {exc.message}")
        sys.exit(REJECTED_STATUS)
    allowed = "all" if principal.allowed_models is None else ", ".join(principal.allowed_models)
    click.echo(f"verdict: accepted: subject {principal.subject!r}, models: {allowed or 'none'}")


@click.group("certs")
def certs_group() -> None:
    """Certificates for trying TLS and mutual TLS locally."""


def _write(path: Path, data: bytes, *, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    if private:
        # O_CREAT's mode does not apply to a file that already existed.
        path.chmod(0o600)


@certs_group.command("generate")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory to write the PEM files to (created if needed).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="Name or address the server certificate is valid for (repeatable). "
    "Default: 127.0.0.1 and localhost.",
)
@click.option("--client", "clients", multiple=True, help="Also issue a client certificate (CN).")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def generate(
    out: Path, hosts: tuple[str, ...], clients: tuple[str, ...], days: int, force: bool
) -> None:
    """Write a development CA, a server certificate it signs, and optional client certificates.

    Files: ca.pem, ca-key.pem, server.pem, server-key.pem, and <client>.pem, <client>-key.pem
    per --client. Private keys are written with mode 0600.
    """
    for name in clients:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name in ("ca", "server"):
            raise click.BadParameter(
                f"{name!r} must be a simple file-name-safe name", param_hint="--client"
            )
    pki = certificates.generate(hosts or ("127.0.0.1", "localhost"), clients, days)
    files: dict[str, tuple[bytes, bool]] = {
        "ca.pem": (pki.ca.cert_pem, False),
        "ca-key.pem": (pki.ca.key_pem, True),
        "server.pem": (pki.server.cert_pem, False),
        "server-key.pem": (pki.server.key_pem, True),
    }
    for name, issued in pki.clients.items():
        files[f"{name}.pem"] = (issued.cert_pem, False)
        files[f"{name}-key.pem"] = (issued.key_pem, True)
    existing = [name for name in files if (out / name).exists()]
    if existing and not force:
        raise click.ClickException(
            f"{out} already has {', '.join(existing)}; pass --force to overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name, (data, private) in files.items():
        _write(out / name, data, private=private)
    click.echo(f"wrote {', '.join(files)} to {out}")
    click.echo("\nserver configuration:\n\nserver:\n  tls:")
    click.echo(f"    cert_file: {out / 'server.pem'}\n    key_file: {out / 'server-key.pem'}")
    click.echo(f"    client_ca_file: {out / 'ca.pem'}   # only for mutual TLS")
    click.echo(f"\nclients trust the server with: LLM_PROXY_CA_BUNDLE={out / 'ca.pem'}")
    for name in pki.clients:
        click.echo(
            f"client {name!r} (mutual TLS): LLM_PROXY_CLIENT_CERT={out / f'{name}.pem'} "
            f"LLM_PROXY_CLIENT_KEY={out / f'{name}-key.pem'}"
        )
