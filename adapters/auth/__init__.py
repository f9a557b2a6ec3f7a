"""Authentication: verifying bearer tokens into principals."""

from adapters.auth.issuing import issue_token, unverified_contents
from adapters.auth.keys import (
    SUPPORTED_ALGORITHMS,
    KeyProblem,
    SigningKey,
    VerificationKey,
    algorithm_for_private_key,
)
from adapters.auth.verifier import ClaimRules, JwtVerifier

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "ClaimRules",
    "JwtVerifier",
    "KeyProblem",
    "SigningKey",
    "VerificationKey",
    "algorithm_for_private_key",
    "issue_token",
    "unverified_contents",
]
