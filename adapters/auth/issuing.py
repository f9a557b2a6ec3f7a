"""Minting tokens the verifier accepts, and reading a token's contents without trusting it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import jwt

from adapters.auth.keys import SigningKey


def issue_token(
    key: SigningKey,
    *,
    subject: str,
    expires_in_s: float,
    models: Sequence[str] | None = None,
    team: str | None = None,
    audience: Sequence[str] | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": issued,
        "exp": issued + int(expires_in_s),
        # A token id lets logs tell two tokens of one subject apart without showing either.
        "jti": secrets.token_hex(8),
    }
    if models is not None:
        claims["models"] = list(models)
    if team:
        claims["team"] = team
    if audience:
        claims["aud"] = audience[0] if len(audience) == 1 else list(audience)
    if issuer:
        claims["iss"] = issuer
    headers = {"kid": key.key_id} if key.key_id else None
    return jwt.encode(claims, key.material, algorithm=key.algorithm, headers=headers)


def unverified_contents(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims as written in the token. Never use them to decide anything."""
    header = jwt.get_unverified_header(token)
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return header, claims
