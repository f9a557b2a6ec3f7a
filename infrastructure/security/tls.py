"""TLS and mutual TLS server credentials, reloadable without dropping established streams."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from infrastructure.config.private_files import world_readable
from infrastructure.config.settings import Settings, TlsSettings
from infrastructure.security.secret_file import SecurityError

log = logging.getLogger("llm_proxy.security")


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
    key_path = Path(tls.key_file).expanduser()
    if world_readable(key_path):
        # A warning, not a refusal: certificate tooling and images often install keys this
        # way, and refusing would take a running service down at its next restart.
        log.warning(
            "server.tls.key_file: %s is readable by every user; run `chmod 600 %s`",
            key_path,
            key_path,
        )
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


def _ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    assert tls.cert_file is not None and tls.key_file is not None
    # Checked as for gRPC first, so a bad file gets the same message naming it.
    _certificate_configuration(tls)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(
        str(Path(tls.cert_file).expanduser()), str(Path(tls.key_file).expanduser())
    )
    if tls.client_ca_file is not None:
        context.load_verify_locations(str(Path(tls.client_ca_file).expanduser()))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class HttpTls:
    """The HTTP listener's TLS context. A reload loads the new certificate into the same
    context, so new connections get it and established ones are left alone."""

    def __init__(self, tls: TlsSettings | None) -> None:
        self.context = _ssl_context(tls) if tls is not None and tls.enabled else None

    def prepare(self, settings: Settings) -> Callable[[], None]:
        tls = settings.http.tls_for(settings.server)
        context = self.context
        if context is None or not tls.enabled:
            if (context is None) == (settings.http.enabled and tls.enabled):
                log.warning("switching TLS on or off for HTTP takes effect at the next restart")
            return lambda: None
        _certificate_configuration(tls)
        assert tls.cert_file is not None and tls.key_file is not None
        cert = str(Path(tls.cert_file).expanduser())
        key = str(Path(tls.key_file).expanduser())
        return lambda: context.load_cert_chain(cert, key)


def http_tls(settings: Settings) -> HttpTls:
    if not settings.http.enabled:
        return HttpTls(None)
    return HttpTls(settings.http.tls_for(settings.server))
