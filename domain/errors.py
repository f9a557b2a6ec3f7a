"""Typed domain errors. Each carries the machine-readable code clients see in-band."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class ProxyError(Exception):
    """Base of every error the proxy reports to a client on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def outcome(self) -> str:
        """What the server records for the request; the client's code unless it must differ."""
        return self.code


class InvalidRequest(ProxyError):
    code = "INVALID_REQUEST"


class EmptyRequest(InvalidRequest):
    code = "EMPTY_REQUEST"


class InputTooLong(InvalidRequest):
    code = "INPUT_TOO_LONG"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"input is {length} characters over all messages; this server accepts at most "
            f"{limit}. Shorten the prompt or split it across requests.",
            details=f"length={length} limit={limit}",
        )
        self.length = length
        self.limit = limit


class MalformedCall(InvalidRequest):
    """The call's identifiers (request id, model name) are not identifiers: too long, or with
    characters that would corrupt logs. Transports refuse it with their own status for bad
    arguments; the message never repeats the value."""

    code = "INVALID_ARGUMENT"


class SchemaInvalid(InvalidRequest):
    code = "INVALID_SCHEMA"


class InvalidOptions(InvalidRequest):
    """Options the model does not have, or values it does not accept."""

    code = "INVALID_OPTIONS"


class AttachmentRefused(InvalidRequest):
    code = "INVALID_ATTACHMENT"


class AttachmentsTooLarge(InvalidRequest):
    code = "ATTACHMENTS_TOO_LARGE"


class NotSupportedByModel(InvalidRequest):
    """The request needs something (tools, attachments, a conversation) the model lacks."""

    code = "UNSUPPORTED_BY_MODEL"


class UnknownModel(ProxyError):
    code = "MODEL_NOT_FOUND"

    def __init__(self, requested: str | None, available: Sequence[str]) -> None:
        listing = ", ".join(available) if available else "(none)"
        # None: the client named no model and the default is not one it may use; the default's
        # name is not the client's to learn then.
        problem = (
            f"model {requested!r} is not served here"
            if requested is not None
            else "no model was named and no default model is available to you; name one"
        )
        super().__init__(
            f"{problem}. Available models and aliases: {listing}",
            details=listing,
        )
        self.requested = requested
        self.available = tuple(available)


class ModelNotVisible(UnknownModel):
    """A served model outside a restricted caller's claim: the caller is told exactly what it
    would be told for a model that does not exist; the server records the truth."""

    @property
    def outcome(self) -> str:
        return PermissionDenied.code


class ModelUnavailable(ProxyError):
    """The model exists but cannot be used as configured (for example a missing API key)."""

    code = "MODEL_UNAVAILABLE"


class PermissionDenied(ProxyError):
    """The caller is authenticated but may not use what it asked for."""

    code = "PERMISSION_DENIED"


class UpstreamFailure(ProxyError):
    code = "UPSTREAM_ERROR"


class UpstreamTimeout(ProxyError):
    code = "TIMEOUT"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the model did not finish within {seconds:g}s. Retry, ask for a shorter answer, "
            "or raise limits.request_timeout_seconds on the server."
        )
        self.seconds = seconds


class ClientTooSlow(ProxyError):
    """The client stopped reading its answer, so the server stopped producing it."""

    code = "CLIENT_TOO_SLOW"


class RequestCancelled(ProxyError):
    code = "CANCELLED"


class RateLimited(ProxyError):
    """Too many requests from one caller; `retry_after_s` says when one more will be accepted."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, details=f"retry_after_seconds={retry_after_s:.3f}")
        self.retry_after_s = retry_after_s


class Overloaded(RateLimited):
    """The server is at its configured limit of concurrent requests."""

    code = "OVERLOADED"


class SubjectOverloaded(RateLimited):
    """The caller already has as many requests in flight as one caller may."""

    code = "TOO_MANY_IN_FLIGHT"


class BudgetExhausted(RateLimited):
    """A token or spend budget (per day or month) is used up until its window resets."""

    code = "BUDGET_EXHAUSTED"


class LimitsUnavailable(ProxyError):
    """The shared store of limits cannot be reached and the server is set to fail closed."""

    code = "LIMITS_UNAVAILABLE"


class AuthenticationFailed(ProxyError):
    """The caller could not be identified: no credentials, or credentials this server rejects.

    The message says what was wrong for the caller to fix; it never repeats the credential.
    """

    code = "UNAUTHENTICATED"
