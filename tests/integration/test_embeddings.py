"""Embeddings over both transports: /v1/embeddings with the openai SDK, and gRPC's Embed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import openai
import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import Proxy, ProxyFactory
from tests.support.tokens import SECRET, bearer, claims, sign


def expected(text: str) -> list[float]:
    # What the suite's test-embed model returns for a text.
    return [float(len(text)), float(len(text.split())), float(sum(map(ord, text)) % 1000)]


@pytest.fixture
async def proxy(start_proxy: ProxyFactory) -> Proxy:
    return await start_proxy({"http": {"enabled": True, "port": 0}})


@pytest.fixture
async def client(proxy: Proxy) -> AsyncIterator[openai.AsyncOpenAI]:
    assert proxy.running.http is not None
    async with openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{proxy.running.http.port}/v1", api_key="x", max_retries=0
    ) as sdk:
        yield sdk


async def test_the_sdk_gets_one_vector_per_text_in_order(client: openai.AsyncOpenAI) -> None:
    texts = ["hello world", "a", "three little words"]

    # The SDK asks for base64 unless told otherwise; both encodings must round-trip.
    default = await client.embeddings.create(model="test-embed", input=texts)
    floats = await client.embeddings.create(model="te", input=texts, encoding_format="float")

    for answer in (default, floats):
        assert [item.index for item in answer.data] == [0, 1, 2]
        assert [item.embedding for item in answer.data] == [expected(t) for t in texts]
        assert answer.model == "test-embed"
        assert answer.usage.prompt_tokens == 6


async def test_embedding_models_are_listed_with_the_chat_models(
    client: openai.AsyncOpenAI,
) -> None:
    listed = [model.id async for model in client.models.list()]
    assert "test-embed" in listed and "echo" in listed
    assert (await client.models.retrieve("te")).id == "te"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "echo", "input": "x"}, 404, "test-embed"),
        ({"input": "x"}, 404, "test-embed"),
        ({"model": "test-embed", "input": [1, 2, 3]}, 400, "token arrays"),
        ({"model": "test-embed", "input": []}, 400, "no text to embed"),
        ({"model": "test-embed", "input": "x", "dimensions": 2}, 400, "dimensions"),
    ],
)
async def test_refusals_have_openai_statuses(
    proxy: Proxy, body: dict[str, Any], status: int, needle: str
) -> None:
    assert proxy.running.http is not None
    async with httpx.AsyncClient() as raw:
        response = await raw.post(
            f"http://127.0.0.1:{proxy.running.http.port}/v1/embeddings", json=body
        )
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


async def test_grpc_embed_is_the_same_use_case(proxy: Proxy) -> None:
    reply = await proxy.stub.Embed(pb.EmbedRequest(inputs=["hello world", "b"], model_name="te"))

    assert reply.WhichOneof("result") == "success", reply.error.error_message
    assert reply.success.model_id == "test-embed"
    assert [list(e.values) for e in reply.success.embeddings] == [
        pytest.approx(expected("hello world")),
        pytest.approx(expected("b")),
    ]
    assert reply.success.input_tokens == 3

    missing = await proxy.stub.Embed(pb.EmbedRequest(inputs=["x"], model_name="echo"))
    assert missing.error.error_code == "MODEL_NOT_FOUND"
    assert "test-embed" in missing.error.error_message


async def test_grpc_embed_needs_a_token_and_respects_the_models_claim(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy({"auth": {"enabled": True, "secret": SECRET}})
    request = pb.EmbedRequest(inputs=["x"], model_name="test-embed")
    only_echo = sign(claims("bob", models=["echo"]), SECRET)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await proxy.stub.Embed(request)
    hidden = await proxy.stub.Embed(request, metadata=bearer(only_echo))
    allowed = await proxy.stub.Embed(
        request, metadata=bearer(sign(claims("carol", models=["test-*"]), SECRET))
    )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert hidden.error.error_code == "MODEL_NOT_FOUND"
    assert allowed.WhichOneof("result") == "success"


async def test_grpc_embed_refuses_a_malformed_request_id(proxy: Proxy) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await proxy.stub.Embed(pb.EmbedRequest(inputs=["x"], request_id="id\x1b[31m"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "non-printable" in (refused.value.details() or "")
