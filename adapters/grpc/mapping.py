"""Translation between protobuf messages and domain values; the only place that knows both."""

from __future__ import annotations

import json
import math
from typing import Any

from adapters.grpc import decode
from application.caller_limits import CallerLimits
from application.describe_server import ServerDescription
from domain.answer import Answer, StreamFinished
from domain.catalog import ModelDescription
from domain.embedding import Embeddings, EmbedRequest
from domain.errors import ProxyError
from domain.identifiers import identifier_problem
from domain.quota import Scope
from domain.request import PromptRequest, ToolCall
from domain.usage import ExecutionMetrics
from llm_proxy_client.generated import llm_proxy_pb2 as pb

# Counts and limits are int32 on the wire; the domain and the config allow any int.
_INT32_MAX = 2**31 - 1


def _int32(value: int) -> int:
    return min(value, _INT32_MAX)


def to_prompt_request(message: pb.ExecuteRequest) -> PromptRequest:
    return decode.to_prompt_request(message)


def to_success(answer: Answer) -> pb.ExecuteSuccess:
    return pb.ExecuteSuccess(**success_fields(answer))


def to_answer_response(request_id: str, answer: Answer) -> pb.ExecuteResponse:
    # Submessages given as fields: protobuf builds them in place instead of copying them in.
    fields: dict[str, Any] = {"request_id": request_id, "success": success_fields(answer)}
    return pb.ExecuteResponse(**fields)


def to_metrics_chunk(request_id: str, metrics: ExecutionMetrics) -> pb.StreamChunk:
    fields: dict[str, Any] = {"request_id": request_id, "final_metrics": metrics_fields(metrics)}
    return pb.StreamChunk(**fields)


def success_fields(answer: Answer) -> dict[str, Any]:
    """An ExecuteSuccess as constructor fields: a response built from them in one call costs
    half what building the submessages and copying them into it does."""
    fields: dict[str, Any] = {
        "response_text": answer.text,
        "metrics": metrics_fields(answer.metrics),
        "actual_model_used": answer.model_id,
        "finish_reason": answer.finish_reason.value,
    }
    if answer.tool_calls:
        fields["tool_calls"] = [to_tool_call(call) for call in answer.tool_calls]
    if answer.resolved_model is not None:
        fields["resolved_model"] = answer.resolved_model
    return fields


def to_complete(finished: StreamFinished) -> pb.StreamComplete:
    complete = pb.StreamComplete(
        actual_model_used=finished.model_id, finish_reason=finished.finish_reason.value
    )
    if finished.resolved_model is not None:
        complete.resolved_model = finished.resolved_model
    return complete


def to_tool_call(call: ToolCall) -> pb.ToolCall:
    return pb.ToolCall(
        call_id=call.call_id, name=call.name, arguments=json.dumps(dict(call.arguments))
    )


def to_metrics(metrics: ExecutionMetrics) -> pb.ExecutionMetrics:
    return pb.ExecutionMetrics(**metrics_fields(metrics))


def metrics_fields(metrics: ExecutionMetrics) -> dict[str, Any]:
    """An ExecutionMetrics as constructor fields; unknown counts and cost stay unset."""
    usage = metrics.usage
    fields: dict[str, Any] = {
        "duration_ms": metrics.duration_ms,
        "retry_count": metrics.retry_count,
        "timestamp": metrics.timestamp,
    }
    if usage.input_tokens is not None:
        fields["input_tokens"] = _int32(usage.input_tokens)
    if usage.output_tokens is not None:
        fields["output_tokens"] = _int32(usage.output_tokens)
    total = usage.total_tokens
    if total is not None:
        fields["total_tokens"] = _int32(total)
    if metrics.cost_usd is not None:
        fields["cost_usd"] = metrics.cost_usd
    return fields


def to_error(error: ProxyError) -> pb.ExecuteError:
    message = pb.ExecuteError(error_code=error.code, error_message=error.message)
    if error.details is not None:
        message.error_details = error.details
    return message


def to_model_info(model: ModelDescription) -> pb.ModelInfo:
    info = pb.ModelInfo(
        model_id=model.model_id,
        display_name=model.display_name or model.model_id,
        provider=model.provider,
        supports_streaming=model.supports_streaming,
        aliases=list(model.aliases),
        supports_schema=model.supports_schema,
        supports_tools=model.supports_tools,
        attachment_types=list(model.attachment_types),
        supports_conversation=model.supports_conversation,
        supports_async=model.supports_async,
        options=[
            pb.ModelOption(
                name=option.name,
                type=option.type,
                description=option.description,
                json_schema=option.json_schema,
            )
            for option in model.options
        ],
    )
    if model.max_context_length is not None:
        info.max_context_length = _int32(model.max_context_length)
    return info


def to_caller_limits(limits: CallerLimits, response: pb.GetServerInfoResponse) -> None:
    response.caller_usage_known = limits.usage_known
    for item in limits.limits:
        limit = item.limit
        response.caller_limits.append(
            pb.CallerLimit(
                kind=limit.kind.value,
                scope=limit.scope.value,
                team=limit.owner if limit.scope is Scope.TEAM else "",
                models=limit.models or "",
                limit=limit.amount,
                used=item.used,
                remaining=item.remaining,
                resets_at=int(item.resets_at) if item.resets_at is not None else 0,
                budget=limit.kind.is_budget,
                source=limit.source,
            )
        )


def to_server_info(description: ServerDescription) -> pb.GetServerInfoResponse:
    limits = description.limits
    server_limits = pb.ServerLimits(
        # Rounded up: a sub-second timeout reported as 0 would read as "no timeout".
        request_timeout_seconds=_int32(math.ceil(limits.request_timeout_seconds)),
        max_attachments=_int32(limits.max_attachments),
        max_attachment_bytes=limits.max_attachment_bytes,
        allow_attachment_urls=limits.allow_attachment_urls,
    )
    if limits.max_input_length is not None:
        server_limits.max_input_length = _int32(limits.max_input_length)
    if limits.max_concurrent_requests is not None:
        server_limits.max_concurrent_requests = _int32(limits.max_concurrent_requests)
    if limits.max_requests_per_minute is not None:
        server_limits.max_requests_per_minute = _int32(limits.max_requests_per_minute)
    return pb.GetServerInfoResponse(
        available_models=[to_model_info(model) for model in description.models],
        default_model=description.default_model,
        limits=server_limits,
        server_version=description.server_version,
        model_aliases=dict(description.aliases),
        server_name=description.server_name,
    )


def to_embed_request(message: pb.EmbedRequest) -> EmbedRequest:
    model = message.model_name if message.HasField("model_name") else None
    malformed = identifier_problem("request_id", message.request_id) or identifier_problem(
        "model_name", model
    )
    if malformed is not None:
        return EmbedRequest((), rejection=malformed)
    return EmbedRequest(inputs=tuple(message.inputs), model=model, request_id=message.request_id)


def to_embed_success(result: Embeddings) -> pb.EmbedSuccess:
    return pb.EmbedSuccess(
        model_id=result.model_id,
        embeddings=[pb.Embedding(values=vector) for vector in result.vectors],
        input_tokens=_int32(result.usage.input_tokens or 0),
    )
