"""Verification keys from settings, the verifier built from them, and its reload on SIGHUP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from adapters.auth import ClaimRules, JwtVerifier, KeyProblem, SigningKey, VerificationKey
from adapters.grpc.auth import AuthInterceptor
from application.authentication import IdentifyCaller, TokenVerifier
from application.ports import RefusalObserver
from domain.principal import Principal
from infrastructure.config.settings import AuthSettings, Settings
from infrastructure.security.secret_file import (
    SecurityError,
    auto_secret_path,
    load_or_create_secret,
)

log = logging.getLogger("llm_proxy.security")


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


def caller_identity(settings: Settings, verifier: TokenVerifier | None) -> IdentifyCaller:
    """How every transport names its callers: by JWT when a verifier exists; else, with mutual
    TLS, by the verified client certificate; else nobody is asked (authentication off)."""
    return IdentifyCaller(verifier, mutual_tls=settings.server.tls.client_ca_file is not None)


def auth_interceptors(
    identify: IdentifyCaller, refusals: RefusalObserver | None = None
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    return [AuthInterceptor(identify, refusals)] if identify.enabled else []


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
