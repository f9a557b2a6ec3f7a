"""Signing and verification keys, each pinned to exactly one algorithm.

Pinning is what defeats algorithm confusion: a key is only ever used with the algorithm it was
configured for, so a token whose header says HS256 can never be checked against an RSA public
key used as an HMAC secret, and `none` is never in the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
EDDSA_ALGORITHMS = ("EdDSA",)
SUPPORTED_ALGORITHMS = (*HMAC_ALGORITHMS, *RSA_ALGORITHMS, *EC_ALGORITHMS, *EDDSA_ALGORITHMS)

# RFC 7518 §3.2: an HMAC key must be at least as long as the hash output; shorter secrets can
# be guessed offline from a single token.
MIN_HMAC_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048


class KeyProblem(ValueError):
    """A configured key cannot be used as configured; the message says why."""


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise KeyProblem(
            f"algorithm {algorithm!r} is not supported; "
            f"use one of {', '.join(SUPPORTED_ALGORITHMS)}"
        )


def _hmac_secret(secret: str | bytes, algorithm: str) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    minimum = MIN_HMAC_SECRET_BYTES[algorithm]
    if len(raw) < minimum:
        raise KeyProblem(
            f"the {algorithm} secret is {len(raw)} bytes; at least {minimum} are required "
            f"(e.g. `python -c 'import secrets; print(secrets.token_urlsafe({minimum}))'`)"
        )
    return raw


def _check_key_type(key: Any, algorithm: str, *, private: bool) -> None:
    kind = "private" if private else "public"
    if algorithm in RSA_ALGORITHMS:
        wanted: tuple[type, ...] = (rsa.RSAPrivateKey,) if private else (rsa.RSAPublicKey,)
        rsa_key = isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey)
        if rsa_key and key.key_size < MIN_RSA_BITS:
            raise KeyProblem(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    elif algorithm in EC_ALGORITHMS:
        wanted = (ec.EllipticCurvePrivateKey,) if private else (ec.EllipticCurvePublicKey,)
        ec_key = isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
        if ec_key and not isinstance(key.curve, EC_ALGORITHMS[algorithm]):
            raise KeyProblem(f"{algorithm} needs a key on curve {EC_ALGORITHMS[algorithm].name}")
    else:
        wanted = (
            (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
            if private
            else (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
        )
    if not isinstance(key, wanted):
        raise KeyProblem(f"the {kind} key is not a key for {algorithm}")


def _pem_key(pem: str | bytes, algorithm: str, kind: str) -> bytes:
    """The PEM text of a `kind` (public or private) key for `algorithm`, which must not be
    an HMAC one."""
    _check_algorithm(algorithm)
    if algorithm in HMAC_ALGORITHMS:
        raise KeyProblem(f"{algorithm} uses a shared secret, not a {kind} key")
    return pem.encode() if isinstance(pem, str) else pem


def _load_private_key(pem: str | bytes) -> Any:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyProblem("not an unencrypted PEM private key") from None


@dataclass(frozen=True, slots=True)
class _PinnedKey:
    """Key material and the one algorithm it is used with."""

    algorithm: str
    # bytes for HMAC; a cryptography key object otherwise (parsed once, not per call).
    material: Any
    key_id: str | None = None

    @property
    def is_hmac(self) -> bool:
        return self.algorithm in HMAC_ALGORITHMS

    @classmethod
    def shared_secret(
        cls, secret: str | bytes, algorithm: str = "HS256", key_id: str | None = None
    ) -> Self:
        _check_algorithm(algorithm)
        if algorithm not in HMAC_ALGORITHMS:
            raise KeyProblem(f"a shared secret is for HS256/384/512 only, not {algorithm}")
        return cls(algorithm, _hmac_secret(secret, algorithm), key_id)


@dataclass(frozen=True, slots=True)
class VerificationKey(_PinnedKey):
    """One key tokens may be signed with. `key_id` matches the token header's `kid`."""

    @classmethod
    def public_key(
        cls, pem: str | bytes, algorithm: str, key_id: str | None = None
    ) -> VerificationKey:
        data = _pem_key(pem, algorithm, "public")
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            try:
                # A certificate is a common thing to be handed instead of a bare key.
                from cryptography import x509

                key = x509.load_pem_x509_certificate(data).public_key()
            except ValueError:
                raise KeyProblem("not a PEM public key or certificate") from None
        _check_key_type(key, algorithm, private=False)
        return cls(algorithm, key, key_id)


@dataclass(frozen=True, slots=True)
class SigningKey(_PinnedKey):
    """The key tokens are signed with, by `token issue`."""

    @classmethod
    def private_key(cls, pem: str | bytes, algorithm: str, key_id: str | None = None) -> SigningKey:
        key = _load_private_key(_pem_key(pem, algorithm, "private"))
        _check_key_type(key, algorithm, private=True)
        return cls(algorithm, key, key_id)


def algorithm_for_private_key(pem: str | bytes) -> str:
    """The natural JWT algorithm for a private key, so `token issue` needs no --algorithm."""
    key = _load_private_key(pem)
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for algorithm, curve in EC_ALGORITHMS.items():
            if isinstance(key.curve, curve):
                return algorithm
        raise KeyProblem(f"unsupported elliptic curve {key.curve.name}")
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return "EdDSA"
    raise KeyProblem("unsupported private key type")
