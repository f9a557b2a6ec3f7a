"""The errors a proxy client raises. Every failure, whatever its transport, becomes one of these.

Callers branch on the class; people read ``str(error)``, which always ends with what to do next.
"""

from __future__ import annotations


class ProxyClientError(Exception):
    """Base of every error raised by the llm-proxy client."""

    #: What the caller can do about it; appended to the message so a person sees it.
    hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        details: str | None = None,
        request_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.details = details
        self.request_id = request_id
        if hint is not None:
            self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        if self.hint and self.hint not in self.message:
            return f"{self.message.rstrip('.')}. {self.hint}"
        return self.message


class ConfigurationError(ProxyClientError, ValueError):
    """The client was configured wrongly (bad URL, unreadable token or CA file)."""

    hint = "Check the server URL, token and CA bundle settings."


class AuthenticationError(ProxyClientError):
    hint = (
        "Supply a valid token: --token, the LLM_PROXY_TOKEN environment variable, "
        "a token file, or llm-proxy://TOKEN@host:port. The server's operator issues tokens "
        "with `llm-proxy token issue --subject NAME`; a development server writes one to "
        "~/.config/llm-proxy/dev-token."
    )


class PermissionDeniedError(ProxyClientError):
    hint = "Your token is valid but lacks access to this; ask the proxy operator for a grant."


class ModelNotFoundError(ProxyClientError):
    hint = "See what the server offers with `llm-proxy models` or client.models()."


class InvalidRequestError(ProxyClientError):
    """The server refused the request as malformed (also EMPTY_REQUEST, INPUT_TOO_LONG…)."""

    hint = "Fix the request and send it again; retrying it unchanged will fail the same way."


class RateLimitedError(ProxyClientError):
    hint = "Wait and retry later."

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str = "RATE_LIMITED",
        details: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        hint = f"Retry after {retry_after:g}s." if retry_after is not None else None
        super().__init__(message, code=code, details=details, request_id=request_id, hint=hint)


class UpstreamError(ProxyClientError):
    """The model behind the proxy failed."""

    hint = "The model provider failed; retry later or choose another model with --model."


class ModelUnavailableError(UpstreamError):
    """The model is known but cannot run as the server is configured (e.g. no API key)."""

    hint = "The server cannot run this model as configured; ask its operator or pick another."


class UnavailableError(ProxyClientError):
    """The proxy could not be reached (after retrying) or dropped the connection."""

    hint = "Check that the server is running and the URL (host, port, TLS or insecure) is right."


class StreamInterruptedError(UnavailableError):
    """The connection failed after part of a streamed answer arrived; it is never retried
    automatically because the caller has already seen output."""

    hint = "Part of the answer was already delivered, so it was not retried; send it again."

    def __init__(
        self, message: str, *, partial_text: str, code: str = "", request_id: str | None = None
    ) -> None:
        self.partial_text = partial_text
        super().__init__(message, code=code, request_id=request_id)


class ProxyTimeoutError(ProxyClientError, TimeoutError):
    hint = "Raise the timeout (--timeout / timeout=) or ask for a shorter answer."


class RequestCancelledError(ProxyClientError):
    hint = "The request was cancelled before it finished; send it again if it is still wanted."


class ServerError(ProxyClientError):
    """The server failed in a way the protocol does not describe (a bug or a non-proxy peer)."""

    hint = (
        "This is a server-side fault; check the server logs and that the URL points at llm-proxy."
    )


class ProtocolError(ServerError):
    """The server answered with something the wire contract does not allow."""
