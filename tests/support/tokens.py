"""Keys of every supported kind and tokens crafted with them, good and bad, for auth tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# 64 bytes: long enough for HS512, the most demanding HMAC variant.
SECRET = "test-secret-" + "0123456789abcdef" * 3 + "-padding-pad"
OTHER_SECRET = "other-secret-" + "fedcba9876543210" * 3 + "-padding-p"


@dataclass(frozen=True)
class KeyPair:
    algorithm: str
    private: Any
    public_pem: str

    @property
    def private_pem(self) -> bytes:
        return bytes(
            self.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _public_pem(private: Any) -> str:
    data: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data.decode()


def key_pair(algorithm: str) -> KeyPair:
    private: Any
    if algorithm.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(algorithm)
    return KeyPair(algorithm, private, _public_pem(private))


def claims(subject: str = "alice", lifetime_s: float = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(lifetime_s)}
    base.update(extra)
    return {key: value for key, value in base.items() if value is not None}


def sign(
    payload: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", kid: str | None = None
) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token assembled by hand, for what PyJWT refuses to produce (alg none, confusion)."""
    signing_input = (
        _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    ).encode()
    signature = (
        b"" if hmac_key is None else hmac.new(hmac_key, signing_input, hashlib.sha256).digest()
    )
    return signing_input.decode() + "." + _b64(signature)


def tampered(token: str, **changes: Any) -> str:
    """The same signature over a changed payload."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
