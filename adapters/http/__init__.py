"""The OpenAI-compatible HTTP transport: a Starlette app served by uvicorn in our event loop."""

from adapters.http.app import HttpServices, build_app
from adapters.http.server import Gate, HttpListener


def build_gate(services: HttpServices) -> Gate:
    """The whole HTTP application: health probes and the drain gate in front of the API."""
    return Gate(build_app(services))


__all__ = ["Gate", "HttpListener", "HttpServices", "build_app", "build_gate"]
