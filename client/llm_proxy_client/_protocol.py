"""Translation between the wire messages and the client's plain values and errors.

Shared by the sync and async clients so both behave identically; only the transport differs.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import grpc

from llm_proxy_client import errors
from llm_proxy_client.connection import ServerAddress
from llm_proxy_client.generated import llm_proxy_pb2 as pb
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

Prompt = str | Sequence[str]
Schema = str | Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Content:
    """Everything a call sends besides the model and its id; the one argument list shared by
    ``execute`` and ``stream`` of both clients."""

    prompt: Prompt | None = None
    system: Prompt | None = None
    schema: Schema | None = None
    messages: Sequence[Message] = ()
    options: Mapping[str, object] | None = None
    attachments: Sequence[Attachment] = ()
    tools: Sequence[Tool] = ()


_ROLES: Mapping[str, pb.Role.ValueType] = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}

# In-band error codes (ExecuteError.error_code) and the class each one becomes.
_INBAND: Mapping[str, type[errors.ProxyClientError]] = {
    "MODEL_NOT_FOUND": errors.ModelNotFoundError,
    "INVALID_REQUEST": errors.InvalidRequestError,
    "EMPTY_REQUEST": errors.InvalidRequestError,
    "INPUT_TOO_LONG": errors.InvalidRequestError,
    "INVALID_SCHEMA": errors.InvalidRequestError,
    "INVALID_OPTIONS": errors.InvalidRequestError,
    "INVALID_ATTACHMENT": errors.InvalidRequestError,
    "ATTACHMENTS_TOO_LARGE": errors.InvalidRequestError,
    "UNSUPPORTED_BY_MODEL": errors.InvalidRequestError,
    "MODEL_UNAVAILABLE": errors.ModelUnavailableError,
    "UPSTREAM_ERROR": errors.UpstreamError,
    "TIMEOUT": errors.ProxyTimeoutError,
    "CANCELLED": errors.RequestCancelledError,
    "PERMISSION_DENIED": errors.PermissionDeniedError,
    "UNAUTHENTICATED": errors.AuthenticationError,
    "RATE_LIMITED": errors.RateLimitedError,
}

_STATUS: Mapping[grpc.StatusCode, type[errors.ProxyClientError]] = {
    grpc.StatusCode.UNAUTHENTICATED: errors.AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.RateLimitedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.ProxyTimeoutError,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: errors.ModelNotFoundError,
    grpc.StatusCode.UNAVAILABLE: errors.UnavailableError,
    grpc.StatusCode.CANCELLED: errors.RequestCancelledError,
}


def new_request_id() -> str:
    return uuid.uuid4().hex


def build_request(content: Content, *, model: str | None, request_id: str) -> pb.ExecuteRequest:
    if content.prompt is None and not content.messages:
        raise errors.ConfigurationError("nothing to send: give a prompt, messages, or both")
    request = pb.ExecuteRequest(
        user_fragments=_fragments(content.prompt) if content.prompt is not None else [],
        system_fragments=_fragments(content.system) if content.system is not None else [],
        request_id=request_id,
        messages=[_message(m) for m in content.messages],
        options={name: _json_text(name, value) for name, value in (content.options or {}).items()},
        attachments=[_attachment(a) for a in content.attachments],
        tools=[_tool(t) for t in content.tools],
    )
    if model:
        request.model_name = model
    schema = content.schema
    if schema is not None:
        request.response_model_schema = schema if isinstance(schema, str) else json.dumps(schema)
    return request


def _json_text(name: str, value: object) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise errors.ConfigurationError(f"option {name!r} is not a JSON value: {exc}") from None


def _message(message: Message) -> pb.ChatMessage:
    return pb.ChatMessage(role=_ROLES[message.role], parts=[_part(p) for p in message.parts])


def _part(part: str | Attachment | ToolCall | ToolResult) -> pb.MessagePart:
    if isinstance(part, str):
        return pb.MessagePart(text=part)
    if isinstance(part, Attachment):
        return pb.MessagePart(attachment=_attachment(part))
    if isinstance(part, ToolCall):
        return pb.MessagePart(tool_call=_tool_call(part))
    return pb.MessagePart(
        tool_result=pb.ToolResult(call_id=part.call_id, name=part.name, output=part.output)
    )


def _attachment(attachment: Attachment) -> pb.Attachment:
    if (attachment.content is None) == (attachment.url is None):
        raise errors.ConfigurationError(
            f"an {attachment.media_type or 'untyped'} attachment needs exactly one of "
            "content (bytes) or url"
        )
    if attachment.content is not None:
        return pb.Attachment(media_type=attachment.media_type, content=attachment.content)
    return pb.Attachment(media_type=attachment.media_type, url=attachment.url or "")


def _tool_call(call: ToolCall) -> pb.ToolCall:
    return pb.ToolCall(
        call_id=call.call_id, name=call.name, arguments=json.dumps(dict(call.arguments))
    )


def _tool(tool: Tool) -> pb.ToolDefinition:
    schema = json.dumps(dict(tool.input_schema)) if tool.input_schema is not None else ""
    return pb.ToolDefinition(name=tool.name, description=tool.description, input_schema=schema)


def tool_call_from(call: pb.ToolCall, request_id: str) -> ToolCall:
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise errors.ProtocolError(
            f"the server sent tool call {call.name!r} with arguments that are not JSON: {exc}",
            request_id=request_id,
        ) from None
    if not isinstance(arguments, dict):
        raise errors.ProtocolError(
            f"the server sent tool call {call.name!r} whose arguments are not a JSON object",
            request_id=request_id,
        )
    return ToolCall(name=call.name, arguments=arguments, call_id=call.call_id)


def _fragments(value: Prompt) -> list[str]:
    # A bare string is one fragment; iterating it would split it into characters.
    return [value] if isinstance(value, str) else list(value)


def metrics_from(message: pb.ExecutionMetrics) -> Metrics:
    return Metrics(
        duration_ms=message.duration_ms,
        input_tokens=message.input_tokens if message.HasField("input_tokens") else None,
        output_tokens=message.output_tokens if message.HasField("output_tokens") else None,
        total_tokens=message.total_tokens if message.HasField("total_tokens") else None,
        cost_usd=message.cost_usd if message.HasField("cost_usd") else None,
        server_retry_count=message.retry_count,
        timestamp=message.timestamp,
    )


def result_from(response: pb.ExecuteResponse, request_id: str, retries: int) -> ExecuteResult:
    kind = response.WhichOneof("result")
    if kind == "error":
        raise error_from_inband(response.error, request_id)
    if kind != "success":
        raise errors.ProtocolError(
            "the server sent an ExecuteResponse with neither success nor error",
            request_id=request_id,
        )
    success = response.success
    rid = response.request_id or request_id
    return ExecuteResult(
        text=success.response_text,
        model=success.actual_model_used,
        metrics=metrics_from(success.metrics),
        request_id=rid,
        client_retries=retries,
        tool_calls=tuple(tool_call_from(call, rid) for call in success.tool_calls),
        finish_reason=success.finish_reason,
        resolved_model=success.resolved_model if success.HasField("resolved_model") else None,
    )


def server_info_from(response: pb.GetServerInfoResponse) -> ServerInfo:
    limits = response.limits
    return ServerInfo(
        models=tuple(
            ModelInfo(
                model_id=m.model_id,
                display_name=m.display_name,
                provider=m.provider,
                supports_streaming=m.supports_streaming,
                max_context_length=(
                    m.max_context_length if m.HasField("max_context_length") else None
                ),
                aliases=tuple(m.aliases),
                supports_schema=m.supports_schema,
                supports_tools=m.supports_tools,
                attachment_types=tuple(m.attachment_types),
                supports_conversation=m.supports_conversation,
                supports_async=m.supports_async,
                options=tuple(_option(o) for o in m.options),
            )
            for m in response.available_models
        ),
        default_model=response.default_model,
        limits=ServerLimits(
            max_requests_per_minute=_opt(limits, "max_requests_per_minute"),
            max_concurrent_requests=_opt(limits, "max_concurrent_requests"),
            max_input_length=_opt(limits, "max_input_length"),
            request_timeout_seconds=_opt(limits, "request_timeout_seconds"),
            max_attachments=limits.max_attachments,
            max_attachment_bytes=limits.max_attachment_bytes,
            allow_attachment_urls=limits.allow_attachment_urls,
        ),
        server_version=response.server_version,
        server_name=response.server_name,
        aliases=dict(response.model_aliases),
    )


def _option(option: pb.ModelOption) -> ModelOption:
    # A schema that does not parse only loses detail; the name and type still describe it.
    try:
        schema = json.loads(option.json_schema) if option.json_schema else {}
    except json.JSONDecodeError:
        schema = {}
    return ModelOption(
        name=option.name,
        type=option.type,
        description=option.description,
        json_schema=schema if isinstance(schema, dict) else {},
    )


def _opt(limits: pb.ServerLimits, name: str) -> int | None:
    if not limits.HasField(name):  # type: ignore[arg-type]
        return None
    value: int = getattr(limits, name)
    return value


def error_from_inband(error: pb.ExecuteError, request_id: str) -> errors.ProxyClientError:
    code = error.error_code or "INTERNAL_ERROR"
    message = error.error_message or f"the server reported {code}"
    details = error.error_details if error.HasField("error_details") else None
    cls = _INBAND.get(code, errors.ServerError)
    return cls(message, code=code, details=details, request_id=request_id)


def error_from_status(
    code: grpc.StatusCode | None,
    details: str | None,
    trailing: Iterable[tuple[str, str | bytes]],
    *,
    address: ServerAddress,
    request_id: str | None,
    attempts: int = 1,
) -> errors.ProxyClientError:
    code = code or grpc.StatusCode.UNKNOWN
    text = details or code.name
    name = code.name
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.RateLimitedError(
            f"rate limited by the server: {text}",
            retry_after=retry_after_from(trailing),
            code=name,
            request_id=request_id,
        )
    if code is grpc.StatusCode.UNAVAILABLE:
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        error = errors.UnavailableError(
            f"cannot reach llm-proxy at {address}{tried}: {text}", code=name, request_id=request_id
        )
        if not address.tls and "Socket closed" in text:
            # What a plaintext client sees from a TLS server: it hangs up on the first bytes.
            error = errors.UnavailableError(
                error.message,
                code=name,
                request_id=request_id,
                hint=f"If the server speaks TLS, use llm-proxy://{address.target}.",
            )
        return error
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return errors.AuthenticationError(
            f"the server rejected the credentials: {text}", code=name, request_id=request_id
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.ProxyTimeoutError(
            f"no answer from {address} before the deadline: {text}",
            code=name,
            request_id=request_id,
        )
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return errors.ProtocolError(
            f"{address} does not implement the vibectl.llm_proxy service: {text}",
            code=name,
            request_id=request_id,
        )
    cls = _STATUS.get(code, errors.ServerError)
    return cls(text, code=name, request_id=request_id)


def handshake_error(
    address: ServerAddress, details: str | None, request_id: str | None
) -> errors.UnavailableError | None:
    """The error for a TLS set-up that cannot work, which no retry would fix; None otherwise.

    gRPC reports these as UNAVAILABLE with OpenSSL's words buried in a long detail string.
    """
    if not address.tls or not details:
        return None
    target = address.target
    if "WRONG_VERSION_NUMBER" in details:
        return errors.UnavailableError(
            f"the server at {target} does not speak TLS; use llm-proxy+insecure://{target}",
            code=grpc.StatusCode.UNAVAILABLE.name,
            request_id=request_id,
            hint="",
        )
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return errors.UnavailableError(
            f"the certificate of the server at {target} is not trusted by this client",
            code=grpc.StatusCode.UNAVAILABLE.name,
            request_id=request_id,
            hint="Trust the CA that signed it with --ca-bundle or LLM_PROXY_CA_BUNDLE "
            "(`llm-proxy certs generate` writes it as ca.pem).",
        )
    return None


Status = tuple[grpc.StatusCode | None, str | None, tuple[tuple[str, str | bytes], ...]]


def status_of(exc: grpc.RpcError) -> Status:
    """Code, details and trailing metadata of a failed call, sync or asyncio alike."""
    # A bare RpcError (rare: raised by interceptors) lacks the Call accessors.
    try:
        code, details = exc.code(), exc.details()
        trailing = exc.trailing_metadata()
    except AttributeError:
        return None, str(exc), ()
    return code, details, metadata_pairs(trailing)


def metadata_pairs(items: Iterable[object] | None) -> tuple[tuple[str, str | bytes], ...]:
    """Metadata as (key, value) pairs; grpc returns namedtuples (sync) or a Metadata (aio)."""
    return tuple(
        cast("tuple[str, str | bytes]", tuple(cast("Iterable[object]", item)))
        for item in items or ()
    )


def retry_after_from(trailing: Iterable[tuple[str, str | bytes]]) -> float | None:
    for key, value in trailing:
        if key.lower() != "retry-after":
            continue
        raw = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        try:
            seconds = float(raw.strip())
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


class StreamAssembler:
    """Follows one stream's chunks and enforces the contract: text, metrics, then complete."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.parts: list[str] = []
        self.metrics: Metrics | None = None
        self.model: str | None = None
        self.tool_calls: list[ToolCall] = []
        self.finish_reason = ""
        self.resolved_model: str | None = None
        self.received = 0

    @property
    def complete(self) -> bool:
        return self.model is not None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def feed(self, chunk: pb.StreamChunk) -> str | None:
        """The text to hand to the caller, if this chunk carries any; raises on an error chunk."""
        self.received += 1
        if self.complete:
            raise errors.ProtocolError(
                "the server sent data after the stream's complete message",
                request_id=self.request_id,
            )
        kind = chunk.WhichOneof("chunk_type")
        if kind == "text_chunk":
            self.parts.append(chunk.text_chunk)
            return chunk.text_chunk
        if kind == "final_metrics":
            self.metrics = metrics_from(chunk.final_metrics)
        elif kind == "tool_call":
            self.tool_calls.append(tool_call_from(chunk.tool_call, self.request_id))
        elif kind == "complete":
            complete = chunk.complete
            self.finish_reason = complete.finish_reason
            if complete.HasField("resolved_model"):
                self.resolved_model = complete.resolved_model
            self.model = complete.actual_model_used
        elif kind == "error":
            raise error_from_inband(chunk.error, self.request_id)
        # An unknown or empty chunk is from a newer server; skipping it keeps old clients working.
        return None

    def result(self, retries: int) -> ExecuteResult:
        if self.model is None:
            raise errors.ProtocolError(
                "the stream ended without its complete message; the answer may be truncated",
                request_id=self.request_id,
            )
        return ExecuteResult(
            text=self.text,
            model=self.model,
            metrics=self.metrics or Metrics(),
            request_id=self.request_id,
            client_retries=retries,
            tool_calls=tuple(self.tool_calls),
            finish_reason=self.finish_reason,
            resolved_model=self.resolved_model,
        )
