"""Plain values given to and returned by the client; no protobuf object ever reaches a caller."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file for the model, sent as bytes (``content``) or, if the server allows it, an https
    ``url``. The server never reads a path: :meth:`from_path` reads the file here."""

    media_type: str
    content: bytes | None = field(default=None, repr=False)
    url: str | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], media_type: str | None = None) -> Attachment:
        """The file's bytes; the media type is guessed from its name unless given."""
        kind = media_type or mimetypes.guess_type(os.fspath(path))[0]
        if not kind:
            raise ValueError(f"cannot tell the media type of {os.fspath(path)!r}; give it")
        return cls(media_type=kind, content=Path(path).read_bytes())


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may ask for; the caller runs it (the server never does)."""

    name: str
    description: str = ""
    #: JSON Schema of the tool's arguments; None: no arguments.
    input_schema: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for ``name`` to be run with ``arguments``; answer with a ToolResult."""

    name: str
    arguments: Mapping[str, object]
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    name: str
    output: str


Part: TypeAlias = str | Attachment | ToolCall | ToolResult


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation: text, attachments, tool calls (assistant) or results (tool)."""

    role: Role
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; use one of {', '.join(ROLES)}")

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", (text,))

    @classmethod
    def user(cls, text: str = "", *attachments: Attachment) -> Message:
        return cls("user", ((text,) if text else ()) + attachments)

    @classmethod
    def assistant(cls, text: str = "", tool_calls: Sequence[ToolCall] = ()) -> Message:
        return cls("assistant", ((text,) if text else ()) + tuple(tool_calls))

    @classmethod
    def tool(cls, *results: ToolResult) -> Message:
        return cls("tool", results)

    @property
    def text(self) -> str:
        return "".join(part for part in self.parts if isinstance(part, str))


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
    #: Tools the model wants run before it can go on (then ``finish_reason`` is "tool_calls").
    tool_calls: tuple[ToolCall, ...] = ()
    #: "stop", "tool_calls", or "" from a server that does not report it.
    finish_reason: str = ""
    #: The model's own id for what answered (e.g. a dated snapshot), when it reports one.
    resolved_model: str | None = None

    def as_message(self) -> Message:
        """This answer as the assistant turn to put in the conversation that goes on."""
        return Message.assistant(self.text, self.tool_calls)


@dataclass(frozen=True, slots=True)
class ModelOption:
    name: str
    #: JSON Schema type, alternatives joined by "|" (e.g. "integer|string").
    type: str = ""
    description: str = ""
    #: The option's whole JSON Schema (bounds, enum, default).
    json_schema: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model_id: str
    display_name: str = ""
    provider: str = ""
    supports_streaming: bool = True
    max_context_length: int | None = None
    aliases: tuple[str, ...] = ()
    supports_schema: bool = False
    supports_tools: bool = False
    #: Media types the model accepts as attachments; empty: none.
    attachment_types: tuple[str, ...] = ()
    supports_conversation: bool = False
    supports_async: bool = False
    options: tuple[ModelOption, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_requests_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    max_input_length: int | None = None
    request_timeout_seconds: int | None = None
    max_attachments: int = 0
    #: Over all attachments of one request.
    max_attachment_bytes: int = 0
    allow_attachment_urls: bool = False


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
