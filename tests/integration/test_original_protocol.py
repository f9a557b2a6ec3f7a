"""A client that knows only the original vibectl.llm_proxy v1 fields (vibectl 0.11.x) works
against today's server unchanged.

The client's message classes are built at test time from a frozen copy of the original .proto
(tests/support/original_protocol/), not from the generated code, so nothing added since can
leak into what this client sends or understands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_tools import protoc  # type: ignore[import-untyped]

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import Proxy

ORIGINAL = Path(__file__).resolve().parents[1] / "support" / "original_protocol"
SERVICE = "/vibectl.llm_proxy.VibectlLLMProxy/"


class Original:
    """The original protocol's messages, from the frozen .proto."""

    def __init__(self, descriptor_set: Path) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
        self.pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            self.pool.Add(file)
        self.file = files.file[0]

    def __getattr__(self, name: str) -> Any:
        return message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName(f"vibectl.llm_proxy.{name}")
        )


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    out = tmp_path_factory.mktemp("original") / "v1.pb"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ORIGINAL}",
            f"--descriptor_set_out={out}",
            str(ORIGINAL / "llm_proxy.proto"),
        ]
    )
    assert status == 0
    return Original(out)


def unknown_numbers(message: Any) -> set[int]:
    fields = UnknownFieldSet(message)
    return {fields[index].field_number for index in range(len(fields))}


def test_every_original_field_is_unchanged_in_the_current_protocol(original: Original) -> None:
    """Numbers, types and labels of every original field, message by message; the current
    protocol may only add."""
    current = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(current)
    now = {message.name: message for message in current.message_type}
    compared = 0
    for message in original.file.message_type:
        fields_now = {field.name: field for field in now[message.name].field}
        for field in message.field:
            added = fields_now[field.name]
            assert (added.number, added.type, added.label, added.type_name) == (
                field.number,
                field.type,
                field.label,
                field.type_name,
            ), f"{message.name}.{field.name} changed"
            compared += 1
    assert compared >= 30
    assert [m.name for m in original.file.service[0].method] == [
        m.name for m in current.service[0].method
    ][:3]


async def test_an_original_client_executes_streams_and_reads_server_info(
    proxy: Proxy, original: Original
) -> None:
    channel = proxy.channel
    sent = original.ExecuteRequest(
        system_fragments=["be brief"],
        user_fragments=["hello", "proxy"],
        model_name="echo",
        request_id="old-1",
    )
    wire = sent.SerializeToString()
    # What the old client puts on the wire is exactly what today's schema reads.
    assert pb.ExecuteRequest.FromString(wire).SerializeToString() == wire

    execute = channel.unary_unary(
        SERVICE + "Execute",
        request_serializer=original.ExecuteRequest.SerializeToString,
        response_deserializer=original.ExecuteResponse.FromString,
    )
    reply = await execute(sent)
    assert reply.request_id == "old-1"
    assert reply.WhichOneof("result") == "success"
    echoed = json.loads(reply.success.response_text)
    assert (echoed["prompt"], echoed["system"]) == ("hello\nproxy", "be brief")
    assert reply.success.actual_model_used == "echo"
    assert reply.success.metrics.HasField("input_tokens")
    # The only thing an old client sees that it does not know: finish_reason (5), ignored.
    assert unknown_numbers(reply.success) == {5}
    assert unknown_numbers(reply) == set()

    stream = channel.unary_stream(
        SERVICE + "StreamExecute",
        request_serializer=original.ExecuteRequest.SerializeToString,
        response_deserializer=original.StreamChunk.FromString,
    )
    chunks = [chunk async for chunk in stream(sent)]
    kinds = [chunk.WhichOneof("chunk_type") for chunk in chunks]
    assert kinds[-2:] == ["final_metrics", "complete"]
    assert set(kinds[:-2]) == {"text_chunk"}
    assert json.loads("".join(c.text_chunk for c in chunks[:-2]))["prompt"] == "hello\nproxy"
    assert chunks[-1].complete.actual_model_used == "echo"
    assert unknown_numbers(chunks[-1].complete) == {2}

    info_call = channel.unary_unary(
        SERVICE + "GetServerInfo",
        request_serializer=original.GetServerInfoRequest.SerializeToString,
        response_deserializer=original.GetServerInfoResponse.FromString,
    )
    info = await info_call(original.GetServerInfoRequest())
    echo = next(model for model in info.available_models if model.model_id == "echo")
    assert echo.supports_streaming
    assert info.limits.request_timeout_seconds == 300
    assert info.default_model


async def test_an_original_client_gets_its_errors_in_band_as_before(
    proxy: Proxy, original: Original
) -> None:
    execute = proxy.channel.unary_unary(
        SERVICE + "Execute",
        request_serializer=original.ExecuteRequest.SerializeToString,
        response_deserializer=original.ExecuteResponse.FromString,
    )
    unknown = await execute(original.ExecuteRequest(user_fragments=["hi"], model_name="nope"))
    empty = await execute(original.ExecuteRequest(user_fragments=["  "], model_name="echo"))
    bad_schema = await execute(
        original.ExecuteRequest(
            user_fragments=["hi"], model_name="scripted", response_model_schema="{nope"
        )
    )
    schema = await execute(
        original.ExecuteRequest(
            user_fragments=["hi"],
            model_name="scripted",
            response_model_schema='{"type": "object"}',
        )
    )

    assert unknown.error.error_code == "MODEL_NOT_FOUND"
    assert "echo" in unknown.error.error_details
    assert empty.error.error_code == "EMPTY_REQUEST"
    assert "user_fragments" in empty.error.error_message
    assert bad_schema.error.error_code == "INVALID_SCHEMA"
    assert "response_model_schema" in bad_schema.error.error_message
    assert json.loads(schema.success.response_text) == {"schema_seen": {"type": "object"}}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await execute(original.ExecuteRequest(user_fragments=["hi"], request_id="x" * 300))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
