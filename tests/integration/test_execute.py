"""Execute over real gRPC through real llm models."""

from __future__ import annotations

import json

import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import request, script


async def test_echo_answers_with_the_prompt_and_usage(proxy: Proxy) -> None:
    reply = await proxy.stub.Execute(
        request("hello there", model="echo", system=("be brief",), request_id="r-1")
    )
    assert reply.request_id == "r-1"
    assert reply.WhichOneof("result") == "success"
    echoed = json.loads(reply.success.response_text)
    assert echoed["prompt"] == "hello there"
    assert echoed["system"] == "be brief"
    assert reply.success.actual_model_used == "echo"
    metrics = reply.success.metrics
    assert metrics.HasField("input_tokens") and metrics.input_tokens > 0
    assert metrics.total_tokens == metrics.input_tokens + metrics.output_tokens
    assert metrics.timestamp > 1_700_000_000
    assert not metrics.HasField("cost_usd")


async def test_fragments_are_all_passed_to_the_model(proxy: Proxy) -> None:
    reply = await proxy.stub.Execute(
        request("part one", "part two", model="echo", system=("sys a", "sys b"))
    )
    echoed = json.loads(reply.success.response_text)
    assert "part one" in echoed["prompt"] and "part two" in echoed["prompt"]
    assert "sys a" in echoed["system"] and "sys b" in echoed["system"]


async def test_markov_sync_model_runs_off_the_event_loop(proxy: Proxy) -> None:
    words = "the cat sat on the mat and the dog sat on the log"
    reply = await proxy.stub.Execute(request(words, model="markov"))
    assert reply.WhichOneof("result") == "success"
    produced = reply.success.response_text.split()
    assert len(produced) >= 50
    assert set(produced) <= set(words.split())


async def test_missing_request_id_is_generated_and_echoed(proxy: Proxy) -> None:
    first = await proxy.stub.Execute(request("hi", model="echo"))
    second = await proxy.stub.Execute(request("hi", model="echo"))
    assert len(first.request_id) >= 16
    assert first.request_id != second.request_id


async def test_default_model_is_used_when_none_is_named(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"models": {"default": "scripted"}})
    reply = await proxy.stub.Execute(request(script(chunks=["from ", "scripted"])))
    assert reply.success.actual_model_used == "scripted"
    assert reply.success.response_text == "from scripted"


async def test_configured_alias_resolves_to_its_model(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"models": {"aliases": {"fast": "echo"}}})
    reply = await proxy.stub.Execute(request("hi", model="fast"))
    assert reply.success.actual_model_used == "echo"


async def test_unknown_model_is_an_in_band_error_listing_what_is_served(proxy: Proxy) -> None:
    reply = await proxy.stub.Execute(request("hi", model="gpt-nonexistent", request_id="r-2"))
    assert reply.request_id == "r-2"
    assert reply.WhichOneof("result") == "error"
    assert reply.error.error_code == "MODEL_NOT_FOUND"
    assert "gpt-nonexistent" in reply.error.error_message
    assert "echo" in reply.error.error_message and "markov" in reply.error.error_message


@pytest.mark.parametrize("fragments", [(), ("",), ("   ", "\n")])
async def test_empty_request_is_rejected(proxy: Proxy, fragments: tuple[str, ...]) -> None:
    reply = await proxy.stub.Execute(request(*fragments, model="echo"))
    assert reply.error.error_code == "EMPTY_REQUEST"
    assert "user_fragments" in reply.error.error_message


async def test_over_long_input_is_rejected_with_the_limit(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"limits": {"max_input_length": 100}})
    ok = await proxy.stub.Execute(request("x" * 60, model="echo", system=("y" * 40,)))
    assert ok.WhichOneof("result") == "success"
    reply = await proxy.stub.Execute(request("x" * 60, model="echo", system=("y" * 41,)))
    assert reply.error.error_code == "INPUT_TOO_LONG"
    assert "101" in reply.error.error_message and "100" in reply.error.error_message


@pytest.mark.parametrize("schema", ["{not json", "[1, 2]", '"a string"', '{"type": 5}'], ids=str)
async def test_invalid_schema_is_rejected(proxy: Proxy, schema: str) -> None:
    reply = await proxy.stub.Execute(request("hi", model="scripted", schema=schema))
    assert reply.error.error_code == "INVALID_SCHEMA"
    assert "response_model_schema" in reply.error.error_message


async def test_valid_schema_reaches_the_model(proxy: Proxy) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    reply = await proxy.stub.Execute(
        request("describe", model="scripted", schema=json.dumps(schema))
    )
    assert json.loads(reply.success.response_text) == {"schema_seen": schema}


async def test_model_failure_is_an_in_band_upstream_error(proxy: Proxy) -> None:
    reply = await proxy.stub.Execute(
        request(
            script(chunks=["a", "b"], fail_after=1, error="provider exploded"), model="scripted"
        )
    )
    assert reply.error.error_code == "UPSTREAM_ERROR"
    assert "provider exploded" in reply.error.error_message


async def test_model_hanging_past_the_timeout_gets_timeout(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"limits": {"request_timeout_seconds": 0.5}})
    reply = await proxy.stub.Execute(request(script(hang=True), model="scripted-async"))
    assert reply.error.error_code == "TIMEOUT"
    after = await proxy.stub.Execute(request("still alive", model="echo"))
    assert after.WhichOneof("result") == "success"


async def test_prices_give_a_cost(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy(
        {"models": {"prices": {"scripted": {"input_per_million": 2.0, "output_per_million": 8.0}}}}
    )
    reply = await proxy.stub.Execute(
        request(script(chunks=["ok"], usage={"input": 1000, "output": 500}), model="scripted")
    )
    metrics = reply.success.metrics
    assert (metrics.input_tokens, metrics.output_tokens) == (1000, 500)
    assert metrics.cost_usd == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1_000_000)


async def test_over_long_request_id_is_invalid_argument(proxy: Proxy) -> None:
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await proxy.stub.Execute(request("hi", model="echo", request_id="r" * 300))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_request_builder_sets_optional_fields() -> None:
    message = request("x", model="m", schema="{}")
    assert message.HasField("model_name") and message.HasField("response_model_schema")
    assert not pb.ExecuteRequest().HasField("model_name")
