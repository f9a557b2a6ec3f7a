"""Plain values returned by the client; no protobuf object ever reaches a caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Metrics:
    duration_ms: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    #: Retries the server made upstream (reported by the server, not the client).
    server_retry_count: int = 0
    #: Unix seconds when the server processed the request.
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class ExecuteResult:
    text: str
    model: str
    metrics: Metrics
    request_id: str
    #: Extra attempts this client made because the server was unavailable.
    client_retries: int = 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model_id: str
    display_name: str = ""
    provider: str = ""
    supports_streaming: bool = True
    max_context_length: int | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_requests_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    max_input_length: int | None = None
    request_timeout_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class ServerInfo:
    models: tuple[ModelInfo, ...]
    default_model: str
    limits: ServerLimits
    server_version: str
    server_name: str
    aliases: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        """The model id `name` designates: itself if served, its target if an alias, else `name`
        unchanged so the server reports the unknown model with its own list."""
        if any(m.model_id == name for m in self.models):
            return name
        return self.aliases.get(name, name)

    def model(self, name: str) -> ModelInfo | None:
        target = self.resolve(name)
        return next((m for m in self.models if m.model_id == target), None)
