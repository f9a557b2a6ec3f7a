"""JWT bearer-token verification with PyJWT, behind the application's TokenVerifier port."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from adapters.auth.keys import VerificationKey
from domain.errors import AuthenticationFailed
from domain.principal import Principal

# Header values are chosen by whoever sent the token; only a bounded, repr'd prefix of them
# ever reaches an error message (and so a log line).
_ECHO_LIMIT = 40


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO_LIMIT else text[: _ECHO_LIMIT - 3] + "..."


@dataclass(frozen=True, slots=True)
class ClaimRules:
    issuer: str | None = None
    # A token must name one of these in `aud`; None: tokens must carry no `aud` at all.
    audience: tuple[str, ...] | None = None
    leeway_s: float = 30.0
    # Real tokens are a few hundred bytes; the bound keeps decoding cost and memory predictable.
    max_token_bytes: int = 4096


class JwtVerifier:
    """Verifies signature and claims, then caches the result briefly by token string.

    The cache is what keeps authentication off the hot path: a client sends the same token on
    every call, and a dictionary lookup replaces base64, JSON and signature work. Entries never
    outlive the token's `exp`, nor `cache_ttl_s`, so a revocation by key removal (a new
    verifier) or by expiry takes effect within that time.
    """

    def __init__(
        self,
        keys: Sequence[VerificationKey],
        rules: ClaimRules = ClaimRules(),
        *,
        cache_size: int = 4096,
        cache_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one verification key is required")
        self._keys = tuple(keys)
        self._algorithms = tuple(dict.fromkeys(key.algorithm for key in self._keys))
        self._rules = rules
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._cache_size = cache_size
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._jwt = jwt.PyJWT()

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._algorithms

    def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            principal, valid_until = cached
            if self._clock() < valid_until:
                return principal
            self._cache.pop(token, None)
        principal, expires = self._decode(token)
        self._remember(token, principal, expires)
        return principal

    def _remember(self, token: str, principal: Principal, expires: float) -> None:
        if self._cache_size <= 0:
            return
        if len(self._cache) >= self._cache_size:
            # Oldest first (dicts keep insertion order): cheap, and good enough for a cache
            # whose entries all die within cache_ttl_s anyway.
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = (principal, min(expires, self._clock() + self._cache_ttl_s))

    def _decode(self, token: str) -> tuple[Principal, float]:
        limit = self._rules.max_token_bytes
        if len(token) > limit:
            raise AuthenticationFailed(
                f"token is {len(token)} bytes; this server accepts at most {limit}"
            )
        if not token.isascii() or token.count(".") != 2:
            raise AuthenticationFailed(
                "malformed token: a JWT is three base64url parts joined by '.'"
            )
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise AuthenticationFailed(
                "malformed token: its header is not valid base64url JSON"
            ) from None
        claims = self._verified_claims(token, header)
        return _principal_from(claims), _expiry(claims)

    def _candidates(self, header: dict[str, Any]) -> list[VerificationKey]:
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise AuthenticationFailed(
                f"token algorithm {_shown(algorithm)} is not accepted here; "
                f"accepted: {', '.join(self._algorithms)}"
            )
        if "kid" in header:
            kid = header["kid"]
            by_id = [key for key in self._keys if key.key_id == kid]
            if not by_id:
                raise AuthenticationFailed(
                    f"unknown key id (kid) {_shown(kid)}: no such key here, or it was rotated out"
                )
            matching = [key for key in by_id if key.algorithm == algorithm]
            if not matching:
                raise AuthenticationFailed(
                    f"key {_shown(kid)} is for {by_id[0].algorithm}, but the token says "
                    f"{_shown(algorithm)}"
                )
            return matching
        return [key for key in self._keys if key.algorithm == algorithm]

    def _verified_claims(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        last_error: jwt.PyJWTError | None = None
        for key in self._candidates(header):
            try:
                claims = self._claims(token, key)
            except jwt.InvalidSignatureError as exc:
                # Without a kid several keys may share the algorithm: try the next one.
                last_error = exc
                continue
            except jwt.PyJWTError as exc:
                raise AuthenticationFailed(self._explain(exc)) from None
            except (ValueError, TypeError, OverflowError, RecursionError):
                # What PyJWT lets through for claims of absurd types or sizes (an `nbf` of
                # 1e400 is an OverflowError): malformed input, never a server error.
                raise AuthenticationFailed(
                    "malformed token: a claim has a value of the wrong type or size"
                ) from None
            return claims
        raise AuthenticationFailed(
            self._explain(last_error or jwt.InvalidSignatureError("no key"))
        ) from None

    def _claims(self, token: str, key: VerificationKey) -> dict[str, Any]:
        rules = self._rules
        claims: dict[str, Any] = self._jwt.decode(
            token,
            key.material,
            algorithms=[key.algorithm],
            audience=list(rules.audience) if rules.audience else None,
            issuer=rules.issuer,
            leeway=rules.leeway_s,
            options={"require": ["exp", "sub"]},
        )
        return claims

    def _explain(self, error: jwt.PyJWTError) -> str:
        rules = self._rules
        if isinstance(error, jwt.ExpiredSignatureError):
            return "token has expired (exp); get a new one"
        if isinstance(error, jwt.ImmatureSignatureError):
            if "iat" in str(error):
                return "token was issued in the future (iat); check the issuer's clock"
            return "token is not valid yet (nbf)"
        if isinstance(error, jwt.MissingRequiredClaimError):
            return f"token has no {error.claim!r} claim, which this server requires"
        if isinstance(error, jwt.InvalidAudienceError):
            if rules.audience is None:
                return "token is restricted to an audience (aud), and this server has none"
            return f"wrong audience (aud): this server is {', '.join(rules.audience)}"
        if isinstance(error, jwt.InvalidIssuerError):
            return f"wrong issuer (iss): this server accepts tokens from {rules.issuer}"
        if isinstance(error, jwt.InvalidSignatureError):
            return "bad signature: the token was not signed by a key this server trusts"
        if isinstance(error, jwt.InvalidIssuedAtError):
            return "the iat claim must be a number of seconds"
        if isinstance(error, jwt.DecodeError):
            return "malformed token: its payload or signature cannot be decoded"
        if isinstance(error, jwt.InvalidAlgorithmError):
            return "token algorithm is not accepted here"
        return f"invalid token ({type(error).__name__})"


# 9999-12-31T23:59:59Z: later than any real expiry, and still a float and a date.
_LATEST_EXPIRY = 253_402_300_799


def _expiry(claims: dict[str, Any]) -> float:
    # PyJWT has checked that int(exp) is in the future; an integer beyond any date (10**400)
    # overflows a float, and such a token is refused rather than taken as eternal.
    try:
        expiry = float(claims["exp"])
    except (TypeError, ValueError, OverflowError):
        expiry = math.inf
    if not expiry <= _LATEST_EXPIRY:
        raise AuthenticationFailed("the exp claim is beyond the year 9999; issue a real expiry")
    return expiry


def _principal_from(claims: dict[str, Any]) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise AuthenticationFailed("the sub claim must be a non-empty string")
    token_id = claims.get("jti")
    team = claims.get("team")
    if team is not None and (not isinstance(team, str) or not team):
        # A malformed team must not fall back to "no team": that would escape its budgets.
        raise AuthenticationFailed("the team claim must be a non-empty string")
    return Principal(
        subject=subject,
        allowed_models=_models(claims.get("models")) if "models" in claims else None,
        token_id=token_id if isinstance(token_id, str) else None,
        team=team,
    )


def _models(value: object) -> tuple[str, ...]:
    # A malformed allow-list must not fall back to "everything": reject the token instead.
    items: Iterable[object] = value if isinstance(value, list) else [None]
    models = tuple(item for item in items if isinstance(item, str) and item)
    if not isinstance(value, list) or len(models) != len(value):
        raise AuthenticationFailed(
            "the models claim must be a list of model ids, aliases or glob patterns"
        )
    return models
