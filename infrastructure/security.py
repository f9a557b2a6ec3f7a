"""Authentication and TLS as configured: keys, the auto-generated secret, credentials, guards.

Secure by default means: with no configuration at all, tokens are required, and the shared
secret they are checked with is generated once and kept in a 0600 file in the user's config
directory. Everything else here turns settings into the objects the transport needs.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from adapters.auth import ClaimRules, JwtVerifier, KeyProblem, SigningKey, VerificationKey
from adapters.grpc.auth import AuthInterceptor, PeerCertificateIdentity
from application.authentication import TokenVerifier
from domain.principal import Principal
from infrastructure.config.settings import AuthSettings, Settings, TlsSettings

log = logging.getLogger("llm_proxy.security")

SECRET_FILE_NAME = "jwt-secret"  # noqa: S105  # a file name, not a secret
# 32 random bytes: the 256-bit floor for HS256, written url-safe so it can be pasted anywhere.
GENERATED_SECRET_BYTES = 32


class SecurityError(Exception):
    """Authentication or TLS cannot be set up as configured; the message says how to fix it."""


def default_secret_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llm-proxy" / SECRET_FILE_NAME


def auto_secret_path(auth: AuthSettings) -> Path:
    if auth.auto_secret_file:
        return Path(auth.auto_secret_file).expanduser()
    return default_secret_file()


def _read_private_file(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Like ssh with a private key: a secret others can read is no longer a secret.
        raise SecurityError(
            f"{path} is accessible to other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return path.read_text(encoding="utf-8").strip()


def load_or_create_secret(path: Path) -> tuple[str, bool]:
    """The secret kept at `path`, generating it (0600, directory 0700) the first time.

    Returns (secret, created). Creation uses O_EXCL so that workers starting together agree
    on one secret instead of overwriting each other's.
    """
    try:
        return _read_private_file(path), False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecurityError(f"cannot read the JWT secret {path}: {exc.strerror}") from exc
    secret = secrets.token_urlsafe(GENERATED_SECRET_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_private_file(path), False
    except OSError as exc:
        raise SecurityError(
            f"cannot create the JWT secret {path}: {exc.strerror}; set auth.auto_secret_file "
            "to a writable path, or configure auth.secret_file"
        ) from exc
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret, True


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    keys: tuple[VerificationKey, ...]
    # Set when the only key is the generated one: development mode.
    auto_secret: Path | None = None
    created: bool = False

    def signing_key(self, key_id: str | None = None) -> SigningKey:
        """An HMAC key this server verifies with, for `token issue` and the dev token."""
        hmac = [key for key in self.keys if key.is_hmac]
        if key_id is not None:
            hmac = [key for key in hmac if key.key_id == key_id]
        if not hmac:
            wanted = f" with id {key_id!r}" if key_id is not None else ""
            raise SecurityError(
                f"this configuration has no shared-secret (HS*) key{wanted} to sign with; "
                "pass --private-key for asymmetric keys"
            )
        # The last configured key is the newest one during a rotation.
        key = hmac[-1]
        return SigningKey(key.algorithm, key.material, key.key_id)


def _configured_keys(auth: AuthSettings) -> list[VerificationKey]:
    keys: list[VerificationKey] = []
    try:
        if auth.secret:
            keys.append(VerificationKey.shared_secret(auth.secret, auth.algorithm))
    except KeyProblem as exc:
        raise SecurityError(f"auth.secret: {exc}") from exc
    for index, entry in enumerate(auth.keys):
        name = f"auth.keys.{index}" + (f" ({entry.id})" if entry.id else "")
        try:
            if entry.secret is not None:
                keys.append(VerificationKey.shared_secret(entry.secret, entry.algorithm, entry.id))
                continue
            pem = entry.public_key
            if pem is None:
                assert entry.public_key_file is not None
                pem = Path(entry.public_key_file).expanduser().read_text(encoding="utf-8")
            keys.append(VerificationKey.public_key(pem, entry.algorithm, entry.id))
        except KeyProblem as exc:
            raise SecurityError(f"{name}: {exc}") from exc
        except OSError as exc:
            raise SecurityError(
                f"{name}: cannot read {entry.public_key_file}: {exc.strerror}"
            ) from exc
    return keys


def key_material(auth: AuthSettings, *, create: bool = True) -> KeyMaterial:
    """The verification keys; with none configured, the generated secret (created if absent,
    unless `create` is False)."""
    keys = _configured_keys(auth)
    if keys:
        return KeyMaterial(tuple(keys))
    path = auto_secret_path(auth)
    if not create and not path.exists():
        raise SecurityError(
            f"no key is configured and {path} does not exist yet; `serve` or `token issue` "
            "generate it"
        )
    secret, created = load_or_create_secret(path)
    try:
        key = VerificationKey.shared_secret(secret)
    except KeyProblem as exc:
        raise SecurityError(f"{path}: {exc}") from exc
    return KeyMaterial((key,), auto_secret=path, created=created)


def claim_rules(auth: AuthSettings) -> ClaimRules:
    return ClaimRules(
        issuer=auth.issuer,
        audience=auth.audience,
        leeway_s=auth.leeway_seconds,
        max_token_bytes=auth.max_token_bytes,
    )


def build_verifier(auth: AuthSettings, material: KeyMaterial) -> JwtVerifier:
    return JwtVerifier(
        material.keys,
        claim_rules(auth),
        cache_size=auth.cache_size,
        cache_ttl_s=auth.cache_seconds,
    )


class SwappableVerifier:
    """The verifier in force; a reload swaps in a new one (and so a fresh cache) at once."""

    def __init__(self, verifier: TokenVerifier, material: KeyMaterial) -> None:
        self._verifier = verifier
        self.material = material

    def verify(self, token: str) -> Principal:
        return self._verifier.verify(token)

    def replace(self, verifier: TokenVerifier, material: KeyMaterial) -> None:
        self._verifier = verifier
        self.material = material


def token_verifier(settings: Settings) -> SwappableVerifier | None:
    """None when JWT authentication is switched off."""
    if not settings.auth.enabled:
        return None
    material = key_material(settings.auth)
    return SwappableVerifier(build_verifier(settings.auth, material), material)


def auth_interceptors(
    settings: Settings, verifier: TokenVerifier | None
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    if verifier is not None:
        return [AuthInterceptor(verifier)]
    if settings.server.tls.client_ca_file:
        # JWT off but mutual TLS on: the verified client certificate names the caller.
        return [AuthInterceptor(peer_identity=PeerCertificateIdentity())]
    return []


class AuthReload:
    """New keys, issuer, audience and leeway take effect on SIGHUP; cached tokens are dropped,
    so a key removed from the configuration stops working at once."""

    def __init__(self, verifier: SwappableVerifier | None) -> None:
        self._verifier = verifier

    def prepare(self, settings: Settings) -> Callable[[], None]:
        current = self._verifier
        if current is None or not settings.auth.enabled:
            if (current is None) == settings.auth.enabled:
                log.warning("auth.enabled changed; it takes effect at the next restart")
            return lambda: None
        material = key_material(settings.auth)
        verifier = build_verifier(settings.auth, material)
        return lambda: current.replace(verifier, material)


# --------------------------------------------------------------------------- bind guard


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


# --------------------------------------------------------------------------- TLS


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise SecurityError(f"server.tls.{what}: cannot read {path}: {exc.strerror}") from exc


def _certificate_configuration(tls: TlsSettings) -> Any:
    assert tls.cert_file is not None and tls.key_file is not None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = _read_pem(tls.cert_file, "cert_file")
    key = _read_pem(tls.key_file, "key_file")
    client_ca = _read_pem(tls.client_ca_file, "client_ca_file") if tls.client_ca_file else None
    # grpc reports bad PEM only as a failed handshake; checking here turns that into an
    # error at start-up (or a rejected reload) that names the file.
    try:
        leaf = x509.load_pem_x509_certificates(cert)[0]
    except ValueError:
        raise SecurityError(
            f"server.tls.cert_file: {tls.cert_file} holds no PEM certificate"
        ) from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise SecurityError(
            f"server.tls.key_file: {tls.key_file} holds no unencrypted PEM private key"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if private.public_key().public_bytes(encoding, public) != leaf.public_key().public_bytes(
        encoding, public
    ):
        raise SecurityError("server.tls.key_file does not belong to server.tls.cert_file")
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise SecurityError(
                f"server.tls.client_ca_file: {tls.client_ca_file} holds no PEM certificate"
            ) from None
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)


class TlsCredentials:
    """Server credentials whose certificate can be replaced while serving.

    grpc asks the fetcher for a new configuration at each TLS handshake; returning one only
    after a reload means established connections, and their streams, are never disturbed
    and new connections get the new certificate.
    """

    def __init__(self, tls: TlsSettings) -> None:
        self._mutual = tls.client_ca_file is not None
        self._pending: Any = None
        self._lock = threading.Lock()
        self.credentials = grpc.dynamic_ssl_server_credentials(
            _certificate_configuration(tls),
            self._fetch,
            require_client_authentication=self._mutual,
        )

    def _fetch(self) -> Any:
        # Called from grpc's own threads at every handshake.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def prepare(self, settings: Settings) -> Callable[[], None]:
        tls = settings.server.tls
        if not tls.enabled or (tls.client_ca_file is not None) != self._mutual:
            log.warning(
                "switching TLS or mutual TLS on or off takes effect at the next restart; "
                "the current certificates stay in use"
            )
            return lambda: None
        configuration = _certificate_configuration(tls)

        def commit() -> None:
            with self._lock:
                self._pending = configuration

        return commit


class NoTls:
    """Stands in for TlsCredentials when TLS is off, so reloads can say it needs a restart."""

    credentials = None

    def prepare(self, settings: Settings) -> Callable[[], None]:
        if settings.server.tls.enabled:
            log.warning("server.tls takes effect at the next restart")
        return lambda: None


def server_credentials(settings: Settings) -> TlsCredentials | NoTls:
    return TlsCredentials(settings.server.tls) if settings.server.tls.enabled else NoTls()


# --------------------------------------------------------------------------- announcements

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
