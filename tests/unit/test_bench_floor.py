"""The bench's llm floor: the floor server answering through one llm call and nothing else."""

from __future__ import annotations

import json
from typing import Any

import llm
import pytest

from bench import bench_models
from bench.floor import _TAIL, LlmFloorServicer
from llm_proxy_client.generated import llm_proxy_pb2 as pb


@pytest.fixture(autouse=True)
def _leave_llms_plugins_as_found() -> Any:
    # The llm floor registers the bench's models with llm, which is process-wide.
    registered = llm.plugins.pm.get_plugin(bench_models.__name__) is not None
    yield
    if not registered and llm.plugins.pm.get_plugin(bench_models.__name__) is not None:
        llm.plugins.pm.unregister(name=bench_models.__name__)


class _Context:
    """The floor reads nothing from its context."""


async def _stream(servicer: LlmFloorServicer, request: pb.ExecuteRequest) -> list[pb.StreamChunk]:
    context: Any = _Context()
    return [chunk async for chunk in servicer.StreamExecute(request, context)]


async def test_execute_answers_with_what_the_model_says() -> None:
    servicer = LlmFloorServicer("echo")
    context: Any = _Context()
    response = await servicer.Execute(pb.ExecuteRequest(user_fragments=["hello"]), context)
    expected = await llm.get_async_model("echo").prompt("hello", stream=False).text()
    assert response.success.response_text == expected
    assert json.loads(response.success.response_text)["prompt"] == "hello"
    assert response.success.actual_model_used == "echo"


async def test_stream_sends_the_models_chunks_then_metrics_and_completion() -> None:
    servicer = LlmFloorServicer("echo")
    chunks = await _stream(servicer, pb.ExecuteRequest(user_fragments=["hello"]))
    text = "".join(chunk.text_chunk for chunk in chunks[:-2])
    assert json.loads(text)["prompt"] == "hello"
    assert tuple(chunks[-2:]) == _TAIL


async def test_a_named_model_is_used_including_the_benchs_own() -> None:
    servicer = LlmFloorServicer("echo")
    request = pb.ExecuteRequest(user_fragments=["chunks=5"], model_name="bench-chunks")
    chunks = await _stream(servicer, request)
    assert len(chunks) == 5 + len(_TAIL)
    assert all(chunk.text_chunk for chunk in chunks[:5])


async def test_an_unknown_model_fails_loudly() -> None:
    servicer = LlmFloorServicer("echo")
    context: Any = _Context()
    with pytest.raises(llm.UnknownModelError):
        await servicer.Execute(pb.ExecuteRequest(user_fragments=["x"], model_name="nope"), context)
