"""Authentication and TLS as configured: keys, the auto-generated secret, credentials, guards.

Secure by default means: with no configuration at all, tokens are required, and the shared
secret they are checked with is generated once and kept in a 0600 file in the user's config
directory. Everything else here turns settings into the objects the transport needs.
"""

from infrastructure.config.addresses import is_loopback
from infrastructure.security.exposure import check_exposure
from infrastructure.security.keys import (
    AuthReload,
    KeyMaterial,
    SwappableVerifier,
    auth_interceptors,
    build_verifier,
    caller_identity,
    claim_rules,
    key_material,
    token_verifier,
)
from infrastructure.security.notice import startup_notice
from infrastructure.security.secret_file import (
    SecurityError,
    auto_secret_path,
    default_secret_file,
    load_or_create_secret,
)
from infrastructure.security.tls import HttpTls, NoTls, TlsCredentials, http_tls, server_credentials

__all__ = [
    "AuthReload",
    "HttpTls",
    "KeyMaterial",
    "NoTls",
    "SecurityError",
    "SwappableVerifier",
    "TlsCredentials",
    "auth_interceptors",
    "auto_secret_path",
    "build_verifier",
    "caller_identity",
    "check_exposure",
    "claim_rules",
    "default_secret_file",
    "http_tls",
    "is_loopback",
    "key_material",
    "load_or_create_secret",
    "server_credentials",
    "startup_notice",
    "token_verifier",
]
