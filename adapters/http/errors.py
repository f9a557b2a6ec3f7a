"""Domain errors in OpenAI's error shape, with the HTTP status OpenAI's clients expect."""

from __future__ import annotations

import json
import math
from types import UnionType

from domain.errors import (
    AttachmentsTooLarge,
    AuthenticationFailed,
    BudgetExhausted,
    InputTooLong,
    InvalidRequest,
    LimitsUnavailable,
    ModelUnavailable,
    PermissionDenied,
    ProxyError,
    RateLimited,
    UnknownModel,
    UpstreamFailure,
    UpstreamTimeout,
)

Headers = dict[str, str]


class RequestTooLarge(InvalidRequest):
    """A body over server.max_message_bytes, refused before it is read whole."""

    code = "REQUEST_TOO_LARGE"


# Most specific first: the too-large errors are also invalid requests.
_STATUS: tuple[tuple[type[ProxyError] | UnionType, int], ...] = (
    (InputTooLong | AttachmentsTooLarge | RequestTooLarge, 413),
    (InvalidRequest, 400),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (UnknownModel, 404),
    (RateLimited, 429),
    (UpstreamFailure, 502),
    (ModelUnavailable | LimitsUnavailable, 503),
    (UpstreamTimeout, 504),
)


def status_of(error: ProxyError) -> int:
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 500)


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def error_body(
    message: str, *, status: int, code: str, param: str | None = None
) -> dict[str, object]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error"),
            "param": param,
            "code": code.lower(),
        }
    }


def error_response_parts(error: ProxyError) -> tuple[int, bytes, Headers]:
    """Status, JSON body and extra headers for a refusal."""
    status = status_of(error)
    headers: Headers = {}
    if isinstance(error, RateLimited):
        # Whole seconds (RFC 9110), never 0: a client told to retry at once would hammer.
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
        headers["retry-after-ms"] = str(max(1, math.ceil(error.retry_after_s * 1000)))
    if isinstance(error, BudgetExhausted):
        # Retry-After is when the budget's window resets, often hours away: the OpenAI SDKs
        # would otherwise retry at once or sleep inside the caller's request.
        headers["x-should-retry"] = "false"
    param = "model" if isinstance(error, UnknownModel) else None
    body = error_body(error.message, status=status, code=error.code, param=param)
    return status, encode(body), headers


def encode(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
