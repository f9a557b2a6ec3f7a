"""Client for llm-proxy servers (the ``vibectl.llm_proxy`` gRPC protocol).

>>> with ProxyClient("llm-proxy+insecure://127.0.0.1:50051") as client:  # doctest: +SKIP
...     print(client.execute("hi", model="echo").text)
"""

import os

# Every failure reaches the caller as an exception that says what to do; gRPC's C core would
# also write its own lines to stderr (six "Handshake failed" lines for one TLS mismatch), on
# the terminal of the `llm` plugin's and the CLI's users. grpc reads this once, when first
# imported, so it is set before that; an exported GRPC_VERBOSITY still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from llm_proxy_client.aio import AsyncProxyClient, AsyncTextStream
from llm_proxy_client.connection import (
    DEFAULT_URL,
    NO_RETRY,
    ConnectionSettings,
    RetryPolicy,
    ServerAddress,
    parse_server_url,
)
from llm_proxy_client.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    ProxyClientError,
    ProxyTimeoutError,
    RateLimitedError,
    RequestCancelledError,
    ServerError,
    StreamInterruptedError,
    UnavailableError,
    UpstreamError,
)
from llm_proxy_client.sync import ProxyClient, TextStream
from llm_proxy_client.types import (
    Attachment,
    ExecuteResult,
    Message,
    Metrics,
    ModelInfo,
    ModelOption,
    ServerInfo,
    ServerLimits,
    Tool,
    ToolCall,
    ToolResult,
)

__all__ = [
    "DEFAULT_URL",
    "NO_RETRY",
    "AsyncProxyClient",
    "AsyncTextStream",
    "Attachment",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectionSettings",
    "ExecuteResult",
    "InvalidRequestError",
    "Message",
    "Metrics",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelOption",
    "ModelUnavailableError",
    "PermissionDeniedError",
    "ProtocolError",
    "ProxyClient",
    "ProxyClientError",
    "ProxyTimeoutError",
    "RateLimitedError",
    "RequestCancelledError",
    "RetryPolicy",
    "ServerAddress",
    "ServerError",
    "ServerInfo",
    "ServerLimits",
    "StreamInterruptedError",
    "TextStream",
    "Tool",
    "ToolCall",
    "ToolResult",
    "UnavailableError",
    "UpstreamError",
    "parse_server_url",
]
