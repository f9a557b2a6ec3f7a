"""Client behaviour against a scriptable fake server on loopback: real gRPC, staged failures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from llm_proxy_client import (
    AsyncProxyClient,
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProxyClient,
    ProxyTimeoutError,
    RateLimitedError,
    RetryPolicy,
    StreamInterruptedError,
    UnavailableError,
    UpstreamError,
)
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.support.certs import make_certs
from tests.support.fake_proxy import Context, ExecuteHandler, FakeProxy, free_port, metrics

FAST = RetryPolicy(max_attempts=5, initial_backoff=0.05, max_backoff=0.4)


def _peer_recorder(peers: list[str]) -> ExecuteHandler:
    async def execute(request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        peers.append(context.peer())
        return pb.ExecuteResponse(
            request_id=request.request_id,
            success=pb.ExecuteSuccess(response_text="ok", actual_model_used="echo"),
        )

    return execute


def _refusing(
    status: grpc.StatusCode, message: str, *, retry_after: str | None = None
) -> ExecuteHandler:
    """A server that refuses every Execute with `status`, and a retry-after when given."""
    trailers = (("retry-after", retry_after),) if retry_after is not None else ()

    async def execute(request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        await context.abort(status, message, trailing_metadata=trailers)
        raise AssertionError("unreachable")

    return execute


def _unavailable_first(times: int) -> ExecuteHandler:
    seen = {"n": 0}

    async def execute(request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        seen["n"] += 1
        if seen["n"] <= times:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return pb.ExecuteResponse(
            request_id=request.request_id,
            success=pb.ExecuteSuccess(response_text="finally", actual_model_used="echo"),
        )

    return execute


async def _partial_then_unavailable(
    request: pb.ExecuteRequest, context: Context
) -> AsyncIterator[pb.StreamChunk]:
    yield pb.StreamChunk(request_id=request.request_id, text_chunk="half ")
    await context.abort(grpc.StatusCode.UNAVAILABLE, "server going away")


# --- the sync client -------------------------------------------------------------------------


def test_execute_sends_everything_and_returns_plain_values(fake: FakeProxy) -> None:
    with ProxyClient(fake.url, token="sekrit") as client:
        result = client.execute(
            ["hello ", "world"],
            model="echo",
            system="be brief",
            schema={"type": "object"},
            request_id="req-1",
        )
    assert result.text == "[be brief] hello world"
    assert result.model == "echo"
    assert result.request_id == "req-1"
    assert result.metrics.input_tokens == 2
    assert result.metrics.total_tokens == 5
    assert result.metrics.cost_usd == pytest.approx(0.001)
    assert result.client_retries == 0
    (call,) = fake.calls_to("Execute")
    assert call.metadata["authorization"] == "Bearer sekrit"
    assert isinstance(call.request, pb.ExecuteRequest)
    assert list(call.request.user_fragments) == ["hello ", "world"]
    assert json.loads(call.request.response_model_schema) == {"type": "object"}


def test_stream_yields_chunks_then_result(fake: FakeProxy) -> None:
    with ProxyClient(fake.url) as client:
        stream = client.stream("abcdefghij", model="markov")
        chunks = list(stream)
        result = stream.result()
    assert chunks == ["abcd", "efgh", "ij"]
    assert result.text == "abcdefghij"
    assert result.model == "markov"
    assert result.metrics.output_tokens == 3


def test_stream_result_reads_the_rest_without_iteration(fake: FakeProxy) -> None:
    with ProxyClient(fake.url) as client, client.stream("0123456789") as stream:
        assert next(stream) == "0123"
        assert stream.result().text == "0123456789"


def test_one_connection_serves_every_call(fake: FakeProxy) -> None:
    peers: list[str] = []
    fake.on_execute = _peer_recorder(peers)
    with ProxyClient(fake.url) as client:
        for _ in range(5):
            client.execute("x")
    assert len(peers) == 5
    assert len(set(peers)) == 1


def test_server_info_is_cached_for_its_ttl(fake: FakeProxy) -> None:
    with ProxyClient(fake.url, server_info_ttl=60) as client:
        info = client.server_info()
        assert client.server_info() is info
        assert [m.model_id for m in client.models()] == ["echo", "markov"]
        assert len(fake.calls_to("GetServerInfo")) == 1
        client.server_info(refresh=True)
        assert len(fake.calls_to("GetServerInfo")) == 2
    assert info.aliases == {"parrot": "echo"}
    assert info.resolve("parrot") == "echo"
    assert info.model("parrot") is not None
    assert info.limits.max_input_length == 1000
    with ProxyClient(fake.url, server_info_ttl=0) as client:
        client.server_info()
        client.server_info()
    assert len(fake.calls_to("GetServerInfo")) == 4


def test_unavailable_is_retried_then_succeeds(fake: FakeProxy) -> None:
    fake.on_execute = _unavailable_first(2)
    with ProxyClient(fake.url, retry=FAST) as client:
        result = client.execute("x")
    assert result.text == "finally"
    assert result.client_retries == 2
    assert len(fake.calls_to("Execute")) == 3


def test_retries_give_up_with_an_unavailable_error(fake: FakeProxy) -> None:
    fake.on_execute = _unavailable_first(100)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.02)
    with ProxyClient(fake.url, retry=policy) as client, pytest.raises(UnavailableError) as caught:
        client.execute("x")
    assert len(fake.calls_to("Execute")) == 3
    assert "after 3 attempts" in str(caught.value)
    assert "server is running" in str(caught.value)


def test_a_server_that_starts_late_is_reached_by_retrying() -> None:
    port = free_port()
    late = FakeProxy()
    starter = threading.Timer(0.6, late.start, kwargs={"port": port})
    starter.start()
    try:
        with ProxyClient(f"llm-proxy+insecure://127.0.0.1:{port}", timeout=10) as client:
            began = time.monotonic()
            result = client.execute("late hello")
        assert result.text == "late hello"
        assert result.client_retries >= 1
        assert time.monotonic() - began >= 0.5
    finally:
        starter.join()
        late.stop()


def test_no_server_at_all_is_unavailable_with_advice() -> None:
    url = f"llm-proxy+insecure://127.0.0.1:{free_port()}"
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.02)
    with ProxyClient(url, retry=policy) as client, pytest.raises(UnavailableError) as caught:
        client.server_info()
    assert "cannot reach llm-proxy at" in str(caught.value)


def test_stream_is_retried_before_any_chunk(fake: FakeProxy) -> None:
    seen = {"n": 0}

    async def flaky(request: pb.ExecuteRequest, context: Context) -> AsyncIterator[pb.StreamChunk]:
        seen["n"] += 1
        if seen["n"] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        yield pb.StreamChunk(text_chunk="ok")
        yield pb.StreamChunk(complete=pb.StreamComplete(actual_model_used="echo"))

    fake.on_stream = flaky
    with ProxyClient(fake.url, retry=FAST) as client:
        stream = client.stream("x")
        assert list(stream) == ["ok"]
        assert stream.result().client_retries == 1


def test_stream_is_not_retried_after_partial_output(fake: FakeProxy) -> None:
    fake.on_stream = _partial_then_unavailable
    received: list[str] = []
    with (
        ProxyClient(fake.url, retry=FAST) as client,
        pytest.raises(StreamInterruptedError) as caught,
    ):
        received.extend(client.stream("x"))
    assert received == ["half "]
    assert caught.value.partial_text == "half "
    assert isinstance(caught.value, UnavailableError)
    assert len(fake.calls_to("StreamExecute")) == 1


def test_rate_limit_carries_retry_after_and_is_not_retried(fake: FakeProxy) -> None:
    fake.on_execute = _refusing(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "60 requests per minute", retry_after="7"
    )
    with ProxyClient(fake.url, retry=FAST) as client, pytest.raises(RateLimitedError) as caught:
        client.execute("x")
    assert caught.value.retry_after == 7.0
    assert "Retry after 7s" in str(caught.value)
    assert len(fake.calls_to("Execute")) == 1


@pytest.mark.parametrize(
    ("status", "cls", "advice"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationError, "LLM_PROXY_TOKEN"),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError, "operator"),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError, "Fix the request"),
    ],
)
def test_status_errors_become_typed_errors(
    fake: FakeProxy, status: grpc.StatusCode, cls: type[Exception], advice: str
) -> None:
    fake.on_execute = _refusing(status, "refused")
    with ProxyClient(fake.url, retry=FAST) as client, pytest.raises(cls) as caught:
        client.execute("x")
    assert advice in str(caught.value)
    assert len(fake.calls_to("Execute")) == 1


def test_deadline_is_a_timeout_error(fake: FakeProxy) -> None:
    async def slow(request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        await asyncio.sleep(2)
        return pb.ExecuteResponse()

    fake.on_execute = slow
    with ProxyClient(fake.url, retry=FAST) as client:
        began = time.monotonic()
        with pytest.raises(ProxyTimeoutError) as caught:
            client.execute("x", timeout=0.2)
    assert time.monotonic() - began < 1.5
    assert isinstance(caught.value, TimeoutError)
    assert len(fake.calls_to("Execute")) == 1


def test_inband_errors_become_typed_errors(fake: FakeProxy) -> None:
    async def unknown(request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        return pb.ExecuteResponse(
            request_id=request.request_id,
            error=pb.ExecuteError(
                error_code="MODEL_NOT_FOUND", error_message="model 'x' is not served here"
            ),
        )

    async def upstream(
        request: pb.ExecuteRequest, context: Context
    ) -> AsyncIterator[pb.StreamChunk]:
        yield pb.StreamChunk(text_chunk="so far ")
        yield pb.StreamChunk(
            error=pb.ExecuteError(error_code="UPSTREAM_ERROR", error_message="boom")
        )

    fake.on_execute = unknown
    fake.on_stream = upstream
    with ProxyClient(fake.url) as client:
        with pytest.raises(ModelNotFoundError, match="`llm-proxy models`"):
            client.execute("x", model="x", request_id="r-9")
        stream = client.stream("x")
        with pytest.raises(UpstreamError, match="boom"):
            list(stream)
        assert stream.text == "so far "


@dataclass(frozen=True)
class TlsFake:
    server: FakeProxy
    port: int
    # The private CA that signed the server's certificate.
    ca: Path


@pytest.fixture
def tls_fake(tmp_path: Path) -> Iterator[TlsFake]:
    """A fake server on TLS, its certificate signed by a private CA the system does not trust."""
    certs = make_certs()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.ca_pem)
    server = FakeProxy()
    port = server.start(tls=(certs.server_key_pem, certs.server_cert_pem))
    yield TlsFake(server, port, ca)
    server.stop()


def test_tls_with_a_private_ca(tls_fake: TlsFake) -> None:
    port, ca = tls_fake.port, tls_fake.ca
    for host in ("127.0.0.1", "localhost"):
        with ProxyClient(f"llm-proxy://tok@{host}:{port}", ca_bundle=ca) as client:
            assert client.execute("over tls").text == "over tls"
    assert tls_fake.server.calls_to("Execute")[0].metadata["authorization"] == "Bearer tok"
    # The system trust store does not know the private CA, so verification must fail.
    no_ca = RetryPolicy(max_attempts=1)
    plain_url = f"llm-proxy://127.0.0.1:{port}"
    with ProxyClient(plain_url, retry=no_ca, env={}) as client, pytest.raises(UnavailableError):
        client.execute("x")
    # A plaintext client cannot talk to a TLS port either.
    insecure_url = f"llm-proxy+insecure://127.0.0.1:{port}"
    with ProxyClient(insecure_url, retry=no_ca) as client, pytest.raises(UnavailableError):
        client.execute("x")


def test_ca_bundle_from_environment(tls_fake: TlsFake) -> None:
    env = {
        "LLM_PROXY_CA_BUNDLE": str(tls_fake.ca),
        "LLM_PROXY_URL": f"vibectl-server://127.0.0.1:{tls_fake.port}",
    }
    with ProxyClient(env=env) as client:
        assert client.server_info().server_name == "fake"


# --- the async client ------------------------------------------------------------------------


async def test_async_execute_stream_info_and_models(fake: FakeProxy) -> None:
    async with AsyncProxyClient(fake.url, token="t") as client:
        result = await client.execute("hello", system=["a", "b"], request_id="q")
        assert (result.text, result.request_id) == ("[ab] hello", "q")
        stream = client.stream("abcdefgh", model="echo")
        assert [chunk async for chunk in stream] == ["abcd", "efgh"]
        final = await stream.result()
        assert (final.text, final.model, final.metrics.total_tokens) == ("abcdefgh", "echo", 5)
        info = await client.server_info()
        assert await client.server_info() is info
        assert [m.model_id for m in await client.models()] == ["echo", "markov"]
    assert len(fake.calls_to("GetServerInfo")) == 1
    assert {c.metadata["authorization"] for c in fake.calls} == {"Bearer t"}


async def test_async_retries_unavailable_then_succeeds(fake: FakeProxy) -> None:
    fake.on_execute = _unavailable_first(2)
    async with AsyncProxyClient(fake.url, retry=FAST) as client:
        result = await client.execute("x")
    assert result.client_retries == 2
    assert len(fake.calls_to("Execute")) == 3


async def test_async_reaches_a_server_that_starts_late() -> None:
    port = free_port()
    late = FakeProxy()
    starter = threading.Timer(0.6, late.start, kwargs={"port": port})
    starter.start()
    try:
        async with AsyncProxyClient(f"llm-proxy+insecure://127.0.0.1:{port}") as client:
            stream = client.stream("late")
            assert "".join([c async for c in stream]) == "late"
            assert (await stream.result()).client_retries >= 1
    finally:
        starter.join()
        await asyncio.to_thread(late.stop)


async def test_async_stream_is_not_retried_after_partial_output(fake: FakeProxy) -> None:
    fake.on_stream = _partial_then_unavailable
    received: list[str] = []

    async def consume(client: AsyncProxyClient) -> None:
        async for chunk in client.stream("x"):
            received.append(chunk)

    async with AsyncProxyClient(fake.url, retry=FAST) as client:
        with pytest.raises(StreamInterruptedError) as caught:
            await consume(client)
    assert received == ["half "]
    assert caught.value.partial_text == "half "
    assert len(fake.calls_to("StreamExecute")) == 1


async def test_async_rate_limit_and_timeout(fake: FakeProxy) -> None:
    async def slow(request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        await asyncio.sleep(2)
        return pb.ExecuteResponse()

    fake.on_execute = _refusing(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after="2.5")
    async with AsyncProxyClient(fake.url, retry=FAST) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.execute("x")
        assert caught.value.retry_after == 2.5
        fake.on_execute = slow
        with pytest.raises(ProxyTimeoutError):
            await client.execute("x", timeout=0.2)


async def test_async_inband_stream_error(fake: FakeProxy) -> None:
    async def invalid(
        request: pb.ExecuteRequest, context: Context
    ) -> AsyncIterator[pb.StreamChunk]:
        yield pb.StreamChunk(
            error=pb.ExecuteError(error_code="INVALID_SCHEMA", error_message="bad schema")
        )

    fake.on_stream = invalid
    async with AsyncProxyClient(fake.url) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.stream("x", schema="{").result()
    assert caught.value.code == "INVALID_SCHEMA"


async def test_async_tls_with_a_private_ca(tls_fake: TlsFake) -> None:
    url = f"llm-proxy://127.0.0.1:{tls_fake.port}"
    async with AsyncProxyClient(url, ca_bundle=tls_fake.ca) as client:
        assert (await client.execute("secure")).text == "secure"


def test_metrics_helper_is_consistent() -> None:
    assert metrics(1, 2).total_tokens == 3
