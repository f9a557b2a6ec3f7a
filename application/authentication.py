"""The authentication port: turning a presented credential into a Principal.

Kept apart from `application.ports` so the transport can depend on this one contract without
pulling in the model-facing ports, and so the verifier can be faked in unit tests.
"""

from __future__ import annotations

from typing import Protocol

from domain.principal import Principal


class TokenVerifier(Protocol):
    """Checks a bearer token and says who presented it.

    Raises `domain.errors.AuthenticationFailed` with a message that names the problem (missing,
    expired, bad signature, wrong audience…) and never contains the token itself. Called on
    every authenticated call, so implementations must be cheap for a token seen before.
    """

    def verify(self, token: str) -> Principal: ...
