"""Protobuf <-> domain mapping: optional fields are absent exactly when the domain has no value."""

from __future__ import annotations

from typing import Literal

import pytest

from adapters.grpc import mapping
from adapters.grpc.generated import llm_proxy_pb2 as pb
from application.describe_server import ServerDescription
from domain.errors import ProxyError, UnknownModel, UpstreamFailure
from domain.policy import Limits
from domain.usage import ExecutionMetrics, Usage
from tests.unit.fakes import model

INT32_MAX = 2**31 - 1

# --------------------------------------------------------------------------- requests


def test_request_without_optional_fields() -> None:
    message = pb.ExecuteRequest(user_fragments=["a", "b"], system_fragments=["s"])

    request = mapping.to_prompt_request(message)

    assert request.user_fragments == ("a", "b")
    assert request.system_fragments == ("s",)
    assert request.model is None
    assert request.response_schema is None
    assert request.request_id == ""


def test_request_with_every_field() -> None:
    message = pb.ExecuteRequest(
        user_fragments=["u"],
        model_name="fast",
        response_model_schema='{"type": "object"}',
        request_id="r-1",
    )

    request = mapping.to_prompt_request(message)

    assert request.model == "fast"
    assert request.response_schema == '{"type": "object"}'
    assert request.request_id == "r-1"
    assert request.system_fragments == ()


def test_request_with_empty_but_present_optionals() -> None:
    message = pb.ExecuteRequest(user_fragments=["u"], model_name="", response_model_schema="")

    request = mapping.to_prompt_request(message)

    assert request.model == ""
    assert request.response_schema == ""


def test_request_survives_the_wire() -> None:
    sent = pb.ExecuteRequest(user_fragments=["u"], model_name="m")
    received = pb.ExecuteRequest.FromString(sent.SerializeToString())

    assert mapping.to_prompt_request(received).model == "m"
    assert mapping.to_prompt_request(received).response_schema is None


# --------------------------------------------------------------------------- metrics

MetricField = Literal["input_tokens", "output_tokens", "total_tokens", "cost_usd"]
OPTIONAL_METRICS: tuple[MetricField, ...] = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
)


def test_metrics_without_usage_or_cost() -> None:
    message = mapping.to_metrics(ExecutionMetrics(duration_ms=12, timestamp=1_700_000_000))

    assert message.duration_ms == 12
    assert message.timestamp == 1_700_000_000
    assert message.retry_count == 0
    for name in OPTIONAL_METRICS:
        assert not message.HasField(name), name


def test_metrics_with_usage_and_cost() -> None:
    metrics = ExecutionMetrics(
        duration_ms=5,
        timestamp=7,
        usage=Usage(input_tokens=10, output_tokens=20),
        cost_usd=0.00125,
        retry_count=2,
    )

    message = mapping.to_metrics(metrics)

    assert (message.input_tokens, message.output_tokens, message.total_tokens) == (10, 20, 30)
    assert message.cost_usd == pytest.approx(0.00125)
    assert message.retry_count == 2


def test_zero_is_a_value_not_an_absence() -> None:
    metrics = ExecutionMetrics(
        duration_ms=0, timestamp=0, usage=Usage(input_tokens=0, output_tokens=0), cost_usd=0.0
    )

    message = mapping.to_metrics(metrics)

    for name in OPTIONAL_METRICS:
        assert message.HasField(name), name
        assert getattr(message, name) == 0


def test_partial_usage() -> None:
    message = mapping.to_metrics(
        ExecutionMetrics(duration_ms=1, timestamp=1, usage=Usage(output_tokens=4))
    )

    assert not message.HasField("input_tokens")
    assert message.output_tokens == 4
    assert message.total_tokens == 4
    assert not message.HasField("cost_usd")


def test_huge_token_counts_do_not_break_the_response() -> None:
    usage = Usage(input_tokens=3_000_000_000, output_tokens=5)

    message = mapping.to_metrics(ExecutionMetrics(duration_ms=1, timestamp=1, usage=usage))

    assert message.input_tokens == INT32_MAX
    assert message.total_tokens == INT32_MAX


# --------------------------------------------------------------------------- errors


def test_error_without_details() -> None:
    message = mapping.to_error(UpstreamFailure("boom"))

    assert (message.error_code, message.error_message) == ("UPSTREAM_ERROR", "boom")
    assert not message.HasField("error_details")


def test_error_with_details() -> None:
    error = UnknownModel("x", ["a", "b"])

    message = mapping.to_error(error)

    assert message.error_code == "MODEL_NOT_FOUND"
    assert message.error_message == error.message
    assert message.error_details == "a, b"


def test_empty_details_are_present() -> None:
    assert mapping.to_error(ProxyError("m", details="")).HasField("error_details")


# --------------------------------------------------------------------------- server info


def test_model_info_without_optional_fields() -> None:
    info = mapping.to_model_info(model("m1", provider="p", supports_streaming=False))

    assert info.model_id == "m1"
    assert info.display_name == "m1"  # falls back to the id
    assert info.provider == "p"
    assert info.supports_streaming is False
    assert list(info.aliases) == []
    assert not info.HasField("max_context_length")


def test_model_info_with_every_field() -> None:
    described = model("m1", aliases=("a", "b"), display_name="Model One", max_context_length=8192)

    info = mapping.to_model_info(described)

    assert info.display_name == "Model One"
    assert list(info.aliases) == ["a", "b"]
    assert info.max_context_length == 8192
    assert info.supports_streaming is True


def describe(limits: Limits) -> ServerDescription:
    return ServerDescription(
        server_name="proxy",
        server_version="1.2.3",
        models=(model("echo"), model("small", aliases=("fast",))),
        default_model="echo",
        aliases={"fast": "small"},
        limits=limits,
    )


def test_server_info() -> None:
    response = mapping.to_server_info(describe(Limits()))

    assert response.server_name == "proxy"
    assert response.server_version == "1.2.3"
    assert response.default_model == "echo"
    assert [m.model_id for m in response.available_models] == ["echo", "small"]
    assert dict(response.model_aliases) == {"fast": "small"}


def test_server_limits_absent() -> None:
    limits = Limits(
        max_input_length=None,
        request_timeout_seconds=30,
        max_concurrent_requests=None,
        max_requests_per_minute=None,
    )

    server_limits = mapping.to_server_info(describe(limits)).limits

    assert server_limits.request_timeout_seconds == 30
    for name in ("max_input_length", "max_concurrent_requests", "max_requests_per_minute"):
        assert not server_limits.HasField(name), name


def test_server_limits_present() -> None:
    limits = Limits(
        max_input_length=1000,
        request_timeout_seconds=2.6,
        max_concurrent_requests=8,
        max_requests_per_minute=120,
    )

    server_limits = mapping.to_server_info(describe(limits)).limits

    assert server_limits.max_input_length == 1000
    assert server_limits.request_timeout_seconds == 3
    assert server_limits.max_concurrent_requests == 8
    assert server_limits.max_requests_per_minute == 120


def test_limits_beyond_int32_are_reported_as_the_largest_int32() -> None:
    # The config accepts any positive integer; the wire field is int32.
    limits = Limits(max_input_length=3_000_000_000, request_timeout_seconds=1e10)

    server_limits = mapping.to_server_info(describe(limits)).limits

    assert server_limits.max_input_length == INT32_MAX
    assert server_limits.request_timeout_seconds == INT32_MAX


def test_a_huge_context_length_is_reported_as_the_largest_int32() -> None:
    info = mapping.to_model_info(model("m", max_context_length=10_000_000_000))

    assert info.max_context_length == INT32_MAX


def test_sub_second_timeout_is_reported_as_one_second_not_zero() -> None:
    server_limits = mapping.to_server_info(describe(Limits(request_timeout_seconds=0.4))).limits
    assert server_limits.request_timeout_seconds == 1
