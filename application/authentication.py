"""Who is calling: the identity port every transport hands its caller's raw credentials to.

A transport knows how credentials arrive (gRPC metadata, HTTP headers, a TLS handshake); it does
not know what they mean. It passes what it received to `IdentifyCaller`, which parses the
`Bearer` scheme and asks the token verifier, so that every transport authenticates the same way
and with the same messages.
"""

from __future__ import annotations

from typing import Protocol

from domain.errors import AuthenticationFailed
from domain.principal import ANONYMOUS, Principal
from domain.value import value_object


class TokenVerifier(Protocol):
    """Checks a bearer token and says who presented it.

    Raises `domain.errors.AuthenticationFailed` with a message that names the problem (missing,
    expired, bad signature, wrong audience…) and never contains the token itself. Called on
    every authenticated call, so implementations must be cheap for a token seen before.
    """

    def verify(self, token: str) -> Principal: ...


@value_object
class Credentials:
    """What a caller presented, exactly as the transport received it."""

    # Every value of the `authorization` header (or metadata key), in order of arrival.
    authorization: tuple[str, ...] = ()
    # The common name of the caller's TLS client certificate, once the handshake verified it.
    peer_subject: str | None = None


_BEARER = "bearer "


class IdentifyCaller:
    """Turns a caller's credentials into a Principal, or refuses with AuthenticationFailed.

    With a token verifier, callers must send `authorization: Bearer <JWT>`; without one but
    with mutual TLS, the verified client certificate names the caller; with neither,
    authentication is off and every caller is anonymous.
    """

    __slots__ = ("_peer", "_verifier")

    def __init__(self, verifier: TokenVerifier | None = None, *, mutual_tls: bool = False) -> None:
        self._verifier = verifier
        self._peer = mutual_tls

    @property
    def enabled(self) -> bool:
        return self._verifier is not None or self._peer

    @property
    def needs_peer_subject(self) -> bool:
        """Whether transports must look up the client certificate (it costs a lookup)."""
        return self._verifier is None and self._peer

    def __call__(self, credentials: Credentials) -> Principal:
        if self._verifier is not None:
            return self._verifier.verify(bearer_token(credentials.authorization))
        if not self._peer:
            return ANONYMOUS
        if credentials.peer_subject is None:
            raise AuthenticationFailed(
                "no verified client certificate: connect with TLS and a certificate signed by "
                "the server's client CA"
            )
        return Principal(subject=credentials.peer_subject)


def bearer_token(values: tuple[str, ...]) -> str:
    """The token of the one `authorization: Bearer <token>` value; refuses anything else."""
    if not values:
        raise AuthenticationFailed("missing credentials: send 'authorization: Bearer <token>'")
    if len(values) > 1:
        raise AuthenticationFailed("more than one authorization header; send exactly one")
    value = values[0]
    if value[: len(_BEARER)].lower() != _BEARER:
        raise AuthenticationFailed("malformed authorization header: expected 'Bearer <token>'")
    token = value[len(_BEARER) :].strip()
    if not token:
        raise AuthenticationFailed(
            "malformed authorization header: the token after 'Bearer' is empty"
        )
    return token
