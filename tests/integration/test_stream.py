"""StreamExecute over real gRPC: chunk order, errors in-band, concurrency."""

from __future__ import annotations

import asyncio
import json

from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import collect, kinds, request, script


async def test_success_is_text_chunks_then_final_metrics_then_complete(proxy: Proxy) -> None:
    chunks = await collect(
        proxy.stub.StreamExecute(
            request(
                script(chunks=["one ", "two ", "three"], usage={"input": 4, "output": 3}),
                model="scripted",
                request_id="s-1",
            )
        )
    )
    assert kinds(chunks) == ["text_chunk"] * 3 + ["final_metrics", "complete"]
    assert "".join(c.text_chunk for c in chunks[:3]) == "one two three"
    assert all(c.request_id == "s-1" for c in chunks)
    metrics = chunks[3].final_metrics
    assert (metrics.input_tokens, metrics.output_tokens, metrics.total_tokens) == (4, 3, 7)
    assert chunks[4].complete.actual_model_used == "scripted"


async def test_echo_streams_through_its_async_model(proxy: Proxy) -> None:
    chunks = await collect(proxy.stub.StreamExecute(request("stream me", model="echo")))
    assert kinds(chunks)[-2:] == ["final_metrics", "complete"]
    text = "".join(c.text_chunk for c in chunks if c.WhichOneof("chunk_type") == "text_chunk")
    assert json.loads(text)["prompt"] == "stream me"


async def test_markov_streams_many_chunks(proxy: Proxy) -> None:
    chunks = await collect(proxy.stub.StreamExecute(request("a b c d e f g h", model="markov")))
    texts = [c for c in chunks if c.WhichOneof("chunk_type") == "text_chunk"]
    assert len(texts) >= 50
    assert kinds(chunks)[-2:] == ["final_metrics", "complete"]


async def test_unknown_model_ends_the_stream_with_one_error(proxy: Proxy) -> None:
    chunks = await collect(proxy.stub.StreamExecute(request("hi", model="nope", request_id="s-2")))
    assert kinds(chunks) == ["error"]
    assert chunks[0].error.error_code == "MODEL_NOT_FOUND"
    assert chunks[0].request_id == "s-2"


async def test_empty_stream_request_is_an_error_chunk(proxy: Proxy) -> None:
    chunks = await collect(proxy.stub.StreamExecute(request(model="echo")))
    assert kinds(chunks) == ["error"]
    assert chunks[0].error.error_code == "EMPTY_REQUEST"


async def test_model_raising_mid_stream_sends_chunks_then_error(proxy: Proxy) -> None:
    for model in ("scripted", "scripted-async"):
        chunks = await collect(
            proxy.stub.StreamExecute(
                request(script(chunks=["a", "b", "c"], fail_after=2, error="boom"), model=model)
            )
        )
        assert kinds(chunks) == ["text_chunk", "text_chunk", "error"], model
        assert chunks[-1].error.error_code == "UPSTREAM_ERROR"
        assert "boom" in chunks[-1].error.error_message


async def test_hanging_stream_times_out_in_band(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"limits": {"request_timeout_seconds": 0.5}})
    for model in ("scripted", "scripted-async"):
        chunks = await collect(proxy.stub.StreamExecute(request(script(hang=True), model=model)))
        assert kinds(chunks) == ["error"], model
        assert chunks[0].error.error_code == "TIMEOUT"


async def test_hundred_concurrent_streams_each_get_their_own_text(proxy: Proxy) -> None:
    async def one(index: int) -> str:
        model = "scripted-async" if index % 2 else "scripted"
        chunks = await collect(
            proxy.stub.StreamExecute(
                request(
                    script(chunks=[f"stream-{index} ", "part-2 ", "end"], delay=0.01),
                    model=model,
                    request_id=f"c-{index}",
                )
            )
        )
        assert kinds(chunks)[-2:] == ["final_metrics", "complete"]
        assert all(c.request_id == f"c-{index}" for c in chunks)
        return "".join(c.text_chunk for c in chunks)

    texts = await asyncio.gather(*(one(i) for i in range(100)))
    assert texts == [f"stream-{i} part-2 end" for i in range(100)]
