"""The client library against the real server on loopback: every API, sync and async.

The server runs in the test's event loop, so blocking client calls go through a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llm_proxy_client import (
    AsyncProxyClient,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    ProxyClient,
    ProxyTimeoutError,
    RetryPolicy,
    StreamInterruptedError,
    UpstreamError,
)
from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import script
from tests.support.fake_proxy import free_port

FAST = RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=0.8)


def url(proxy: Proxy) -> str:
    return f"llm-proxy+insecure://{proxy.address}"


async def test_sync_execute_stream_info_and_models(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"models": {"aliases": {"fast": "echo"}}})

    def run() -> dict[str, Any]:
        with ProxyClient(url(proxy)) as client:
            executed = client.execute("hello", model="fast", system="be brief", request_id="c-1")
            stream = client.stream(
                script(chunks=["one ", "two"], usage={"input": 4, "output": 2}), model="scripted"
            )
            chunks = list(stream)
            return {
                "executed": executed,
                "chunks": chunks,
                "streamed": stream.result(),
                "info": client.server_info(),
                "models": client.models(),
            }

    out = await asyncio.to_thread(run)
    executed = out["executed"]
    assert executed.model == "echo"
    assert executed.request_id == "c-1"
    echoed = json.loads(executed.text)
    assert (echoed["prompt"], echoed["system"]) == ("hello", "be brief")
    assert executed.metrics.input_tokens is not None
    assert out["chunks"] == ["one ", "two"]
    streamed = out["streamed"]
    assert (streamed.text, streamed.model) == ("one two", "scripted")
    assert (streamed.metrics.input_tokens, streamed.metrics.output_tokens) == (4, 2)
    info = out["info"]
    assert info.aliases["fast"] == "echo"
    assert info.resolve("fast") == "echo"
    assert {m.model_id for m in out["models"]} >= {"echo", "markov", "scripted"}


async def test_async_execute_stream_info_and_models(proxy: Proxy) -> None:
    async with AsyncProxyClient(url(proxy)) as client:
        executed = await client.execute(
            [script(chunks=["a", "b"], usage={"input": 1, "output": 2})], model="scripted-async"
        )
        assert (executed.text, executed.model, executed.metrics.total_tokens) == (
            "ab",
            "scripted-async",
            3,
        )
        stream = client.stream(script(chunks=["x", "y", "z"]), model="scripted-a")
        assert [chunk async for chunk in stream] == ["x", "y", "z"]
        assert (await stream.result()).model == "scripted-async"
        info = await client.server_info()
        assert info.default_model
        assert await client.server_info() is info
        assert "scripted" in {m.model_id for m in await client.models()}


async def test_schemas_reach_the_model(proxy: Proxy) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    async with AsyncProxyClient(url(proxy)) as client:
        result = await client.execute("describe", model="scripted", schema=schema)
        with pytest.raises(InvalidRequestError) as caught:
            await client.execute("describe", model="scripted", schema="{not json")
    assert json.loads(result.text) == {"schema_seen": schema}
    assert caught.value.code == "INVALID_SCHEMA"


async def test_inband_errors_raise_typed_errors(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"limits": {"max_input_length": 200, "request_timeout_seconds": 0.5}})
    async with AsyncProxyClient(url(proxy), retry=FAST) as client:
        with pytest.raises(ModelNotFoundError, match="gpt-nonexistent"):
            await client.execute("hi", model="gpt-nonexistent")
        with pytest.raises(InvalidRequestError) as empty:
            await client.execute("   ", model="echo")
        with pytest.raises(InvalidRequestError) as too_long:
            await client.execute("x" * 201, model="echo")
        with pytest.raises(UpstreamError, match="provider exploded") as upstream:
            await client.execute(script(error="provider exploded"), model="scripted")
        with pytest.raises(ModelUnavailableError):
            await client.execute(script(error="no key", error_type="needs_key"), model="scripted")
        with pytest.raises(ProxyTimeoutError) as timed_out:
            await client.execute(script(hang=True), model="scripted-async")
        stream = client.stream(
            script(chunks=["a", "b"], fail_after=1, error="mid"), model="scripted"
        )
        with pytest.raises(UpstreamError):
            await stream.result()
    assert empty.value.code == "EMPTY_REQUEST"
    assert too_long.value.code == "INPUT_TOO_LONG"
    assert upstream.value.code == "UPSTREAM_ERROR"
    assert timed_out.value.code == "TIMEOUT"
    assert stream.text == "a"


async def test_client_deadline_is_a_timeout(proxy: Proxy) -> None:
    def run() -> None:
        with ProxyClient(url(proxy), timeout=0.3) as client:
            client.execute(script(hang=True), model="scripted")

    with pytest.raises(ProxyTimeoutError) as caught:
        await asyncio.to_thread(run)
    assert caught.value.code == "DEADLINE_EXCEEDED"


@dataclass(frozen=True)
class _SignallingRetry(RetryPolicy):
    """FAST's retries, and an event set once the client has failed to connect and is about to
    retry: the moment to start the server, with no guess of how long that takes."""

    retrying: threading.Event = field(default_factory=threading.Event, compare=False)

    def delay(self, retry: int, rng: random.Random) -> float:
        self.retrying.set()
        return super().delay(retry, rng)


@pytest.fixture
def held_port() -> Iterator[tuple[int, socket.socket]]:
    """A port bound (so nothing else takes it) but not listening (so connecting is refused)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1], held


async def _start_once_retried(
    start_proxy: ProxyFactory, retry: _SignallingRetry, held: tuple[int, socket.socket]
) -> None:
    assert await asyncio.to_thread(retry.retrying.wait, 30), "the client never retried"
    port, sock = held
    sock.close()
    await start_proxy({"server": {"port": port}})


def _signalling() -> _SignallingRetry:
    return _SignallingRetry(max_attempts=10, initial_backoff=0.1, max_backoff=0.8)


async def test_sync_client_reaches_a_server_that_starts_late(
    start_proxy: ProxyFactory, held_port: tuple[int, socket.socket]
) -> None:
    retry = _signalling()

    def run() -> Any:
        with ProxyClient(f"llm-proxy+insecure://127.0.0.1:{held_port[0]}", retry=retry) as client:
            return client.execute("late", model="echo")

    call = asyncio.create_task(asyncio.to_thread(run))
    await _start_once_retried(start_proxy, retry, held_port)
    result = await asyncio.wait_for(call, 10)
    assert result.client_retries >= 1
    assert json.loads(result.text)["prompt"] == "late"


async def test_async_client_reaches_a_server_that_starts_late(
    start_proxy: ProxyFactory, held_port: tuple[int, socket.socket]
) -> None:
    retry = _signalling()

    async def run() -> Any:
        url = f"llm-proxy+insecure://127.0.0.1:{held_port[0]}"
        async with AsyncProxyClient(url, retry=retry) as c:
            stream = c.stream("late", model="echo")
            return "".join([chunk async for chunk in stream]), await stream.result()

    call = asyncio.create_task(run())
    await _start_once_retried(start_proxy, retry, held_port)
    text, result = await asyncio.wait_for(call, 10)
    assert json.loads(text)["prompt"] == "late"
    assert result.client_retries >= 1


async def test_stream_cut_by_server_shutdown_is_not_retried(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    port = free_port()
    proxy = await start_proxy({"server": {"port": port}})
    runs = tmp_path / "runs.log"
    prompt = script(chunks=["first ", "second ", "third"], delay=0.3, probe_file=str(runs))
    received: list[str] = []

    async def consume() -> None:
        async with AsyncProxyClient(url(proxy), retry=FAST) as client:
            async for chunk in client.stream(prompt, model="scripted-async"):
                received.append(chunk)
                if len(received) == 1:
                    # Kill the server after the first chunk, then bring a fresh one up on the
                    # same port: a retry would now succeed, so only policy can stop it.
                    await proxy.running.stop(0)
                    await start_proxy({"server": {"port": port}})

    with pytest.raises(StreamInterruptedError) as caught:
        await consume()
    assert received == ["first "]
    assert caught.value.partial_text == "first "
    assert runs.read_text().count("started") == 1
