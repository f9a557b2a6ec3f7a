"""What `serve` tells the operator about authentication at start-up."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from infrastructure.config.addresses import is_loopback
from infrastructure.config.settings import Settings, TlsSettings
from infrastructure.security.keys import SwappableVerifier

log = logging.getLogger("llm_proxy.security")


DEV_TOKEN_SUBJECT = "dev"  # noqa: S105  # a subject name, not a secret
DEV_TOKEN_SECONDS = 3600
DEV_TOKEN_FILE_NAME = "dev-token"  # noqa: S105  # a file name, not a secret
DEFAULT_PORT = 50051


def startup_notice(
    settings: Settings,
    verifier: SwappableVerifier | None,
    host: str,
    port: int,
    *,
    http_url: str | None = None,
) -> str | None:
    """Log how callers authenticate; in development mode, also return text for the terminal.

    In development mode (a generated secret, a loopback address) a one-hour token is written
    to a 0600 file beside the secret, and the text says how to load it; the token itself is
    never printed or logged.
    """
    if verifier is None:
        return None
    material = verifier.material
    if material.auto_secret is None:
        algorithms = sorted({key.algorithm for key in material.keys})
        log.info(
            "authentication on: %d verification key(s), %s",
            len(material.keys),
            ", ".join(algorithms),
        )
        return None
    log.info(
        "authentication on with a development secret %s %s (mode 0600); configure "
        "auth.secret_file or auth.keys for production",
        "generated at" if material.created else "read from",
        material.auto_secret,
    )
    command = cli_command()
    if not is_loopback(host):
        log.info("mint tokens on this machine with: %s token issue --subject NAME", command)
        return None
    from adapters.auth import issue_token

    token = issue_token(
        material.signing_key(),
        subject=DEV_TOKEN_SUBJECT,
        expires_in_s=DEV_TOKEN_SECONDS,
        issuer=settings.auth.issuer,
        audience=settings.auth.audience,
    )
    # A file, not the terminal: `serve > log 2>&1` would put a printed token in a 0644 log.
    token_file = write_private_file(material.auto_secret.with_name(DEV_TOKEN_FILE_NAME), token)
    return (
        "\nAuthentication is on. A development token (subject 'dev', valid 1 hour) is in\n"
        f"{token_file} (mode 0600). In another shell:\n\n"
        f"  export LLM_PROXY_TOKEN=$(cat {shlex.quote(str(token_file))})\n"
        f"  {command} prompt{_connection_flags(settings.server.tls, port)} -m echo 'hello'\n\n"
        + (_http_usage(http_url, settings.server.tls) if http_url is not None else "")
        + f"More tokens: {command} token issue --subject NAME --expires-in 30d\n"
    )


def _http_usage(url: str, tls: TlsSettings) -> str:
    """How to reach the OpenAI-compatible API with the same token: curl and the openai SDK."""
    body = '{"model": "echo", "messages": [{"role": "user", "content": "hello"}]}'
    trust = ""
    sdk_trust = ""
    if url.startswith("https:"):
        ca = shlex.quote(_ca_bundle(tls))
        trust = f" --cacert {ca}"
        sdk_trust = f"SSL_CERT_FILE={ca} "
    # Double quotes inside, so that the shell quoting around it stays plain.
    code = (
        'import openai; print(openai.OpenAI().chat.completions.create(model="echo", '
        'messages=[{"role": "user", "content": "hi"}]).choices[0].message.content)'
    )
    return (
        f"The OpenAI-compatible API is at {url}, with the same token:\n\n"
        f'  curl{trust} {url}/chat/completions -H "Authorization: Bearer $LLM_PROXY_TOKEN" \\\n'
        f"    -H 'Content-Type: application/json' -d '{body}'\n"
        f'  {sdk_trust}OPENAI_BASE_URL={url} OPENAI_API_KEY="$LLM_PROXY_TOKEN" \\\n'
        f"    {python_command()} -c {shlex.quote(code)}\n\n"
    )


def python_command() -> str:
    """This interpreter as the person who ran `serve` can paste it (it has the openai SDK)."""
    on_path = shutil.which("python")
    if on_path is not None and Path(on_path).resolve() == Path(sys.executable).resolve():
        return "python"
    relative = os.path.relpath(sys.executable)
    return relative if not relative.startswith("..") else sys.executable


def _connection_flags(tls: TlsSettings, port: int) -> str:
    if not tls.enabled:
        return "" if port == DEFAULT_PORT else f" --server llm-proxy+insecure://127.0.0.1:{port}"
    flags = f" --server llm-proxy://127.0.0.1:{port} --ca-bundle {shlex.quote(_ca_bundle(tls))}"
    if tls.client_ca_file is not None:
        # The server cannot know which client certificate the caller holds.
        flags += " --client-cert YOU.pem --client-key YOU-key.pem"
    return flags


def _ca_bundle(tls: TlsSettings) -> str:
    """What a client should trust: the CA `certs generate` writes beside the server
    certificate, else the certificate file itself (self-signed, or holding its chain)."""
    assert tls.cert_file is not None
    cert = Path(tls.cert_file)
    beside = cert.with_name("ca.pem")
    return str(beside if beside.is_file() and beside != cert else cert)


def write_private_file(path: Path, text: str) -> Path:
    """Replace `path` with `text`, readable by its owner only from the first byte on."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def cli_command() -> str:
    """How the person who just ran `serve` can run the CLI from the same directory: the console
    script installed beside this interpreter (a bare `python` may not be the one with llm-proxy
    installed, and `make serve` puts .venv/bin on its own PATH only)."""
    script = Path(sys.executable).with_name("llm-proxy")
    if not script.exists():
        return f"{sys.executable} -m infrastructure.cli"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)
