"""What `serve` tells the operator about authentication at start-up."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from infrastructure.config.addresses import is_loopback
from infrastructure.config.settings import Settings
from infrastructure.security.keys import SwappableVerifier

log = logging.getLogger("llm_proxy.security")


DEV_TOKEN_SUBJECT = "dev"  # noqa: S105  # a subject name, not a secret
DEV_TOKEN_SECONDS = 3600


def startup_notice(
    settings: Settings, verifier: SwappableVerifier | None, host: str, port: int
) -> str | None:
    """Log how callers authenticate; in development mode, also return text for the terminal.

    The text holds a short-lived token, so it goes to standard output (the terminal of whoever
    started the server), never to the log, and only when the secret was generated here and the
    server listens on loopback.
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
    command = _cli_command()
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
    scheme = "llm-proxy" if settings.server.tls.enabled else "llm-proxy+insecure"
    server = (
        ""
        if port == 50051 and not settings.server.tls.enabled
        else f" --server {scheme}://127.0.0.1:{port}"
    )
    return (
        "\nAuthentication is on. A development token (subject 'dev', valid 1 hour):\n\n"
        f"  export LLM_PROXY_TOKEN={token}\n\n"
        "Then, in that shell:\n\n"
        f"  {command} prompt{server} -m echo 'hello'\n\n"
        f"More tokens: {command} token issue --subject NAME --expires-in 30d\n"
    )


def _cli_command() -> str:
    """How the person who just ran `serve` can run the CLI: the console script installed beside
    this interpreter (a bare `python` may not be the one with llm-proxy installed)."""
    script = Path(sys.executable).with_name("llm-proxy")
    if not script.exists():
        return f"{sys.executable} -m infrastructure.cli"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)
