"""The bind guard: no unauthenticated listener beyond loopback unless explicitly forced."""

from __future__ import annotations

import logging

from infrastructure.config.addresses import is_loopback
from infrastructure.config.settings import Settings
from infrastructure.security.secret_file import SecurityError

log = logging.getLogger("llm_proxy.security")


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve beyond loopback without authentication; log what protects the port."""
    auth_on = settings.auth.enabled
    mtls = settings.server.tls.client_ca_file is not None
    if not auth_on:
        log.warning(
            "authentication is OFF (auth.enabled: false)%s: anyone who can reach %s may use "
            "every model",
            "; callers are named by their client certificates" if mtls else "",
            host,
        )
    if is_loopback(host):
        return
    if not auth_on and not mtls and not settings.server.allow_insecure_public:
        raise SecurityError(
            f"refusing to listen on {host} with authentication off: set auth.enabled: true, "
            "or configure server.tls.client_ca_file for mutual TLS, or set "
            "server.allow_insecure_public: true if something in front of this server "
            "authenticates callers"
        )
    if auth_on and not settings.server.tls.enabled:
        log.warning(
            "listening on %s without TLS: bearer tokens cross the network in clear text; "
            "configure server.tls",
            host,
        )
