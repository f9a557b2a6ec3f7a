"""The server's side of every refusal: whatever the client is told, and however the transport
gives up on the call, the server records the request exactly once and lets go of it.

Each case runs against the real server over real gRPC, for Execute and StreamExecute, and
checks the server's bookkeeping: one request log line, llm_proxy_requests_total counted once
under the refusal's outcome, the in-flight gauge back at zero, and no ERROR line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from infrastructure.log import REQUEST_LOGGER
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import collect, request, sample, scrape, script
from tests.support import scripted_models
from tests.support.scripted_models import Probe
from tests.support.tokens import SECRET, bearer, claims, sign

AUTH: dict[str, Any] = {"enabled": True, "keys": [{"id": "k", "secret": SECRET}]}
METHODS = ("Execute", "StreamExecute")
SERVER_LOGGERS = ("llm_proxy", "grpc")
# The RPC's label in the metrics: how the answer is delivered, whatever the transport.
METRIC_METHOD = {"Execute": "unary", "StreamExecute": "stream"}
SETTLE_S = 5.0


def token(subject: str, **extra: Any) -> tuple[tuple[str, str], ...]:
    return bearer(sign(claims(subject, **extra), SECRET, kid="k"))


@dataclass(frozen=True)
class Refusal:
    """What the client should see: a status (None: answered in-band with `code`)."""

    status: grpc.StatusCode | None
    code: str


async def call(
    proxy: Proxy, method: str, message: pb.ExecuteRequest, metadata: Any = None
) -> tuple[grpc.StatusCode | None, str]:
    """The status the call ended with and the in-band error code, if any."""
    try:
        if method == "Execute":
            reply = await proxy.stub.Execute(message, metadata=metadata)
            return None, reply.error.error_code if reply.HasField("error") else "ok"
        chunks = await collect(proxy.stub.StreamExecute(message, metadata=metadata))
        last = chunks[-1]
        return None, last.error.error_code if last.HasField("error") else "ok"
    except grpc.aio.AioRpcError as error:
        return error.code(), ""


class Books:
    """The server's bookkeeping, read from its request log and its metrics endpoint."""

    def __init__(self, proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
        port = proxy.running.metrics_port
        assert port is not None
        self._port = port
        self._caplog = caplog

    def requests_total(self, method: str, outcome: str, model: str = "none") -> float:
        try:
            return sample(
                scrape(self._port),
                "llm_proxy_requests_total",
                method=METRIC_METHOD[method],
                transport="grpc",
                model=model,
                outcome=outcome,
            )
        except AssertionError:
            return 0.0

    def refused(self, reason: str) -> float:
        try:
            return sample(scrape(self._port), "llm_proxy_refused_calls_total", reason=reason)
        except AssertionError:
            return 0.0

    def in_flight(self, method: str) -> float:
        return sample(
            scrape(self._port),
            "llm_proxy_in_flight_requests",
            method=METRIC_METHOD[method],
            transport="grpc",
        )

    def lines(self, request_id: str) -> list[logging.LogRecord]:
        return [
            record
            for record in self._caplog.records
            if record.name == REQUEST_LOGGER
            and getattr(record, "fields", {}).get("request_id") == request_id
        ]

    def errors(self) -> list[logging.LogRecord]:
        """ERROR lines of the server and of grpc serving it (not, say, asyncio reporting an
        object another test left to the garbage collector)."""
        return [
            record
            for record in self._caplog.records
            if record.levelno >= logging.ERROR and record.name.startswith(SERVER_LOGGERS)
        ]

    async def settle(self, done: Callable[[], bool]) -> None:
        """Waits for the server to finish its side of a call the client has already seen end."""
        deadline = time.monotonic() + SETTLE_S
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


async def assert_recorded_once(
    books: Books,
    method: str,
    outcome: str,
    make_call: Callable[[], Awaitable[tuple[grpc.StatusCode | None, str]]],
    expected: Refusal,
    *,
    request_id: str | None,
    model: str = "none",
    then: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """`then` runs once the refused call has ended (to let go of what held the server)."""
    before = books.requests_total(method, outcome, model)
    status, code = await make_call()
    assert (status, code) == (expected.status, expected.code if status is None else "")
    if then is not None:
        await then()

    def finished() -> bool:
        counted = books.requests_total(method, outcome, model) >= before + 1
        logged = request_id is None or len(books.lines(request_id)) >= 1
        return counted and logged and all(books.in_flight(each) == 0 for each in METHODS)

    await books.settle(finished)
    assert books.requests_total(method, outcome, model) == before + 1
    for each in METHODS:
        assert books.in_flight(each) == 0
    if request_id is not None:
        lines = books.lines(request_id)
        assert len(lines) == 1, [line.getMessage() for line in lines]
        assert lines[0].fields["outcome"] == outcome  # type: ignore[attr-defined]
    assert books.errors() == []


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


async def secured(
    start_proxy: ProxyFactory,
    capture: pytest.LogCaptureFixture,
    limits: dict[str, Any] | None = None,
) -> tuple[Proxy, Books]:
    """A server with auth and metrics on, under `limits`, and its bookkeeping."""
    proxy = await start_proxy(
        {"auth": AUTH, "metrics": {"enabled": True, "port": 0}, "limits": limits or {}}
    )
    return proxy, Books(proxy, capture)


@pytest.mark.parametrize("method", METHODS)
async def test_a_model_outside_the_callers_claim(
    start_proxy: ProxyFactory, capture: pytest.LogCaptureFixture, method: str
) -> None:
    proxy, books = await secured(start_proxy, capture)
    rid = f"perm-{method}"
    message = request("hi", model="markov", request_id=rid)
    await assert_recorded_once(
        books,
        method,
        "PERMISSION_DENIED",
        lambda: call(proxy, method, message, token("alice", models=["echo"])),
        # The caller hears what an unknown model gets; the server books the truth.
        Refusal(None, "MODEL_NOT_FOUND"),
        request_id=rid,
        model="markov",
    )


@pytest.mark.parametrize("method", METHODS)
async def test_a_caller_over_its_rate(
    start_proxy: ProxyFactory, capture: pytest.LogCaptureFixture, method: str
) -> None:
    proxy, books = await secured(start_proxy, capture, {"max_requests_per_minute": 1})
    md = token("bob")
    assert await call(proxy, method, request("first", model="echo"), md) == (None, "ok")
    for attempt in range(3):
        rid = f"rate-{method}-{attempt}"
        message = request("hi", model="echo", request_id=rid)
        await assert_recorded_once(
            books,
            method,
            "RATE_LIMITED",
            lambda message=message: call(proxy, method, message, md),  # type: ignore[misc]
            Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
            request_id=rid,
            model="echo",
        )


@dataclass
class Holder:
    """A stream whose model waits until released, so its slot is held for as long as needed."""

    probe: Probe
    chunks: asyncio.Task[list[pb.StreamChunk]]

    async def finish(self) -> None:
        self.probe.release.set()
        assert (await self.chunks)[0].text_chunk == "a"


async def hold_a_slot(proxy: Proxy, metadata: Any) -> Holder:
    name = f"holder-{uuid.uuid4().hex[:8]}"
    stream = proxy.stub.StreamExecute(
        request(script(chunks=["a"], hang=True, probe=name), model="scripted-async"),
        metadata=metadata,
    )
    holder = Holder(scripted_models.probe(name), asyncio.create_task(collect(stream)))
    # The model runs only once the request is admitted: from then on it holds its slot.
    assert await asyncio.to_thread(holder.probe.started.wait, SETTLE_S)
    return holder


@pytest.mark.parametrize("method", METHODS)
async def test_a_server_at_its_concurrency_limit(
    start_proxy: ProxyFactory, capture: pytest.LogCaptureFixture, method: str
) -> None:
    proxy, books = await secured(start_proxy, capture, {"max_concurrent_requests": 1})
    holder = await hold_a_slot(proxy, token("holder"))
    rid = f"full-{method}"
    await assert_recorded_once(
        books,
        method,
        "OVERLOADED",
        lambda: call(proxy, method, request("hi", model="echo", request_id=rid), token("carol")),
        Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        request_id=rid,
        model="echo",
        then=holder.finish,
    )


BAD_INPUT = [
    ("empty", request("  ", model="echo", request_id="bad-empty"), "EMPTY_REQUEST", "none"),
    ("no model", request("hi", model="nope", request_id="bad-model"), "MODEL_NOT_FOUND", "none"),
    (
        "schema",
        request("hi", model="echo", schema="{not json", request_id="bad-schema"),
        "INVALID_SCHEMA",
        "echo",
    ),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("case", "message", "outcome", "model"), BAD_INPUT)
async def test_bad_input_answered_in_band(
    start_proxy: ProxyFactory,
    capture: pytest.LogCaptureFixture,
    method: str,
    case: str,
    message: pb.ExecuteRequest,
    outcome: str,
    model: str,
) -> None:
    proxy, books = await secured(start_proxy, capture)
    await assert_recorded_once(
        books,
        method,
        outcome,
        lambda: call(proxy, method, message, token("dave")),
        Refusal(None, outcome),
        request_id=message.request_id,
        model=model,
    )


@pytest.mark.parametrize("method", METHODS)
async def test_a_caller_at_its_own_concurrency_cap_while_others_are_served(
    start_proxy: ProxyFactory, capture: pytest.LogCaptureFixture, method: str
) -> None:
    # Four slots: one caller may hold two (half, by default), the rest stay free for others.
    proxy, books = await secured(start_proxy, capture, {"max_concurrent_requests": 4})
    greedy = token("greedy")
    held = [await hold_a_slot(proxy, greedy) for _ in range(2)]
    rid = f"capped-{method}"

    async def others_are_served_then_let_go() -> None:
        assert await call(proxy, method, request("hi", model="echo"), token("other")) == (
            None,
            "ok",
        )
        for holder in held:
            await holder.finish()

    await assert_recorded_once(
        books,
        method,
        "TOO_MANY_IN_FLIGHT",
        lambda: call(proxy, method, request("hi", model="echo", request_id=rid), greedy),
        Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        request_id=rid,
        model="echo",
        then=others_are_served_then_let_go,
    )
    assert proxy.container.admission().in_flight == 0
    assert books.errors() == []


MALFORMED = [
    ("request id with a newline", request("hi", model="echo", request_id="a\nb")),
    ("request id too long", request("hi", model="echo", request_id="r" * 257)),
    ("model name too long", request("hi", model="m" * 257)),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("case", "message"), MALFORMED)
async def test_malformed_identifiers_refused_with_a_status(
    start_proxy: ProxyFactory,
    capture: pytest.LogCaptureFixture,
    method: str,
    case: str,
    message: pb.ExecuteRequest,
) -> None:
    proxy, books = await secured(start_proxy, capture)
    await assert_recorded_once(
        books,
        method,
        "INVALID_ARGUMENT",
        lambda: call(proxy, method, message, token("erin")),
        Refusal(grpc.StatusCode.INVALID_ARGUMENT, ""),
        # The id is not carried on (it is the thing refused): the record has a generated one.
        request_id=None,
    )
    lines = [
        r
        for r in capture.records
        if r.name == REQUEST_LOGGER and r.fields["outcome"] == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    ]
    assert len(lines) == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("credentials", [None, bearer("not-a-token")])
async def test_a_caller_without_valid_credentials(
    start_proxy: ProxyFactory,
    capture: pytest.LogCaptureFixture,
    method: str,
    credentials: Any,
) -> None:
    """Refused before it is a request at all: anyone can send these by the thousand, so they
    are counted (llm_proxy_refused_calls_total) and summarised in the log, not recorded and
    logged one by one as requests are."""
    proxy, books = await secured(start_proxy, capture)
    before = books.refused("unauthenticated")
    rid = f"anonymous-{method}"

    status, _ = await call(proxy, method, request("hi", model="echo", request_id=rid), credentials)

    assert status == grpc.StatusCode.UNAUTHENTICATED
    await books.settle(lambda: books.refused("unauthenticated") >= before + 1)
    assert books.refused("unauthenticated") == before + 1
    for each in METHODS:
        assert books.in_flight(each) == 0
    assert books.lines(rid) == []
    assert books.errors() == []
