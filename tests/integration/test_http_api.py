"""The OpenAI-compatible HTTP API on the real server, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import script
from tests.support import scripted_models
from tests.support.tokens import SECRET, claims, sign

HTTP: dict[str, Any] = {"http": {"enabled": True, "port": 0}}


class Records:
    """Every finished request's record, as the server's observers see it."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self._finished = asyncio.Event()

    def request_started(self, method: Any, transport: str) -> None:
        return None

    def request_finished(self, record: Any) -> None:
        self.records.append(record)
        self._finished.set()

    async def once_finished(self, timeout: float = 10.0) -> list[Any]:
        """The records, once a request has finished (some finish after their client left)."""
        await asyncio.wait_for(self._finished.wait(), timeout)
        return self.records


def base_url(proxy: Proxy) -> str:
    assert proxy.running.http is not None
    return f"http://127.0.0.1:{proxy.running.http.port}/v1"


_CLIENTS: list[openai.AsyncOpenAI | openai.OpenAI] = []


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Clients are closed within their test's event loop, never later by the collector."""
    yield
    while _CLIENTS:
        client = _CLIENTS.pop()
        if isinstance(client, openai.AsyncOpenAI):
            await client.close()
        else:
            client.close()


def sync_client(proxy: Proxy, key: str = "unused", **options: Any) -> openai.OpenAI:
    client = openai.OpenAI(base_url=base_url(proxy), api_key=key, max_retries=0, **options)
    _CLIENTS.append(client)
    return client


def async_client(proxy: Proxy, key: str = "unused", **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("max_retries", 0)
    client = openai.AsyncOpenAI(base_url=base_url(proxy), api_key=key, **options)
    _CLIENTS.append(client)
    return client


async def start(
    start_proxy: ProxyFactory, config: dict[str, Any] | None = None
) -> tuple[Proxy, Records]:
    records = Records()
    merged = {**HTTP, **(config or {})}
    proxy = await start_proxy(merged, observer=records)
    return proxy, records


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# --------------------------------------------------------------------------- the SDK's happy paths


async def test_sync_sdk_gets_a_whole_completion(start_proxy: ProxyFactory) -> None:
    proxy, records = await start(start_proxy)
    client = sync_client(proxy)

    completion = await asyncio.to_thread(
        client.chat.completions.create,
        model="echo",
        messages=[{"role": "system", "content": "be brief"}, *user("hello proxy")],
        user="end-user-7",
    )

    choice = completion.choices[0]
    echoed = json.loads(choice.message.content or "")
    assert echoed["prompt"] == "hello proxy" and echoed["system"] == "be brief"
    assert choice.finish_reason == "stop"
    assert completion.model == "echo"
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None and completion.usage.prompt_tokens == 4
    [record] = records.records
    assert (record.transport, record.method.value, record.outcome) == ("http", "unary", "ok")
    assert record.end_user == "end-user-7"
    assert completion.id == f"chatcmpl-{record.request_id}"


async def test_async_sdk_streams_with_a_final_usage_chunk(start_proxy: ProxyFactory) -> None:
    proxy, records = await start(start_proxy)
    client = async_client(proxy)
    prompt = script(chunks=["one ", "two ", "three"], usage={"input": 3, "output": 5})

    stream = await client.chat.completions.create(
        model="scripted",
        messages=user(prompt),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishing[-1] == "stop" and set(finishing[:-1]) == {None}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 5)
    assert {c.model for c in chunks} == {"scripted"} and len({c.id for c in chunks}) == 1
    [record] = records.records
    assert (record.transport, record.method.value, record.outcome) == ("http", "stream", "ok")
    assert record.first_chunk_s is not None


async def test_without_include_usage_no_usage_chunk_is_sent(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    stream = await async_client(proxy).chat.completions.create(
        model="scripted", messages=user(script(chunks=["a"])), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


async def test_json_schema_reaches_the_model_as_its_schema(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    schema: Any = {"type": "object", "properties": {"city": {"type": "string"}}}

    completion = await async_client(proxy).chat.completions.create(
        model="scripted",
        messages=user("where?"),
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )

    assert json.loads(completion.choices[0].message.content or "") == {"schema_seen": schema}


async def test_json_object_asks_for_any_object(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    completion = await async_client(proxy).chat.completions.create(
        model="scripted", messages=user("json please"), response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "") == {
        "schema_seen": {"type": "object"}
    }


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def asks_for_weather() -> str:
    # llm-echo makes the tool calls its prompt asks for.
    return json.dumps(
        {
            "prompt": "weather?",
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        }
    )


async def test_a_tool_call_round_trip(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    client = async_client(proxy)
    messages: list[Any] = user(asks_for_weather())

    first = await client.chat.completions.create(
        model="echo", messages=messages, tools=[WEATHER_TOOL]
    )

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"},
    ]
    second = await client.chat.completions.create(
        model="echo", messages=messages, tools=[WEATHER_TOOL]
    )

    assert second.choices[0].finish_reason == "stop"
    answer = json.loads(second.choices[0].message.content or "")
    assert answer["tool_results"] == [
        {"name": "get_weather", "output": "sunny, 24C", "tool_call_id": call.id}
    ]


async def test_streamed_tool_calls_come_as_openai_deltas(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    stream = await async_client(proxy).chat.completions.create(
        model="echo", messages=user(asks_for_weather()), tools=[WEATHER_TOOL], stream=True
    )
    deltas = [c.choices[0] async for c in stream if c.choices]

    calls = [d.delta.tool_calls[0] for d in deltas if d.delta.tool_calls]
    head, *rest = calls
    assert head.id and head.function is not None and head.function.name == "get_weather"
    assert all(part.id is None and part.index == head.index for part in rest)
    arguments = "".join((part.function.arguments or "") for part in calls if part.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert deltas[-1].finish_reason == "tool_calls"


async def test_models_are_listed_in_openai_shape(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    client = async_client(proxy)

    listed = [model.id async for model in client.models.list()]
    one = await client.models.retrieve("scripted-a")

    assert {"echo", "scripted", "scripted-async"} <= set(listed)
    assert one.id == "scripted-a" and one.object == "model"
    with pytest.raises(openai.NotFoundError, match="echo"):
        await client.models.retrieve("nope")


# --------------------------------------------------------------------------- refusals


async def status_error(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        await call
    return caught.value


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"n": 2}, "'n' is 2"),
        ({"temperaturee": 0.2}, "temperaturee"),
        ({"logprobs": True}, "log probabilities"),
        ({"tool_choice": "required", "tools": [WEATHER_TOOL]}, "tool_choice"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "wizard"),
    ],
)
async def test_bad_requests_are_400_naming_the_problem(
    start_proxy: ProxyFactory, extra: dict[str, Any], needle: str
) -> None:
    proxy, records = await start(start_proxy)
    body: dict[str, Any] = {"model": "echo", "messages": user("hi"), **extra}
    messages = body.pop("messages")

    create: Any = async_client(proxy).chat.completions.create
    error = await status_error(
        create(model="echo", messages=messages, extra_body={"temperaturee": 0.2})
        if "temperaturee" in extra
        else create(messages=messages, **body)
    )

    assert isinstance(error, openai.BadRequestError)
    assert needle in error.message
    assert error.body is not None and isinstance(error.body, dict)
    assert error.body["type"] == "invalid_request_error"
    [record] = records.records
    assert record.transport == "http" and record.outcome != "ok"


async def test_an_option_the_model_lacks_is_400_listing_its_options(
    start_proxy: ProxyFactory,
) -> None:
    proxy, _ = await start(start_proxy)
    error = await status_error(
        async_client(proxy).chat.completions.create(model="echo", messages=user("hi"), seed=3)
    )
    assert isinstance(error, openai.BadRequestError)
    assert "seed" in error.message


async def test_an_unknown_model_is_404_listing_what_is_available(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    error = await status_error(
        async_client(proxy).chat.completions.create(model="gpt-nope", messages=user("hi"))
    )
    assert isinstance(error, openai.NotFoundError)
    assert "gpt-nope" in error.message and "echo" in error.message


async def test_a_body_over_the_message_limit_is_413(start_proxy: ProxyFactory) -> None:
    proxy, records = await start(start_proxy, {"server": {"max_message_bytes": 2048}})
    error = await status_error(
        async_client(proxy).chat.completions.create(model="echo", messages=user("x" * 5000))
    )
    assert error.status_code == 413
    assert "at most 2048" in error.message
    [record] = records.records
    assert record.outcome == "REQUEST_TOO_LARGE"


async def test_upstream_failure_is_502_and_timeout_is_504(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy, {"limits": {"request_timeout_seconds": 0.3}})
    client = async_client(proxy)

    failed = await status_error(
        client.chat.completions.create(model="scripted", messages=user(script(error="boom")))
    )
    slow = await status_error(
        client.chat.completions.create(
            model="scripted", messages=user(script(chunks=["a"], delay=5))
        )
    )

    assert isinstance(failed, openai.InternalServerError) and failed.status_code == 502
    assert isinstance(slow, openai.InternalServerError) and slow.status_code == 504


async def test_a_stream_refused_before_its_first_byte_gets_a_status(
    start_proxy: ProxyFactory,
) -> None:
    proxy, _ = await start(start_proxy)
    error = await status_error(
        async_client(proxy).chat.completions.create(model="nope", messages=user("hi"), stream=True)
    )
    assert isinstance(error, openai.NotFoundError)


async def test_429_carries_retry_after_and_the_sdk_waits_it_out(
    start_proxy: ProxyFactory,
) -> None:
    proxy, records = await start(start_proxy, {"limits": {"max_concurrent_per_subject": 1}})
    probe = scripted_models.probe("http-retry-after")
    hanging = script(chunks=["done"], hang=True, probe="http-retry-after")
    holder = asyncio.ensure_future(
        async_client(proxy).chat.completions.create(model="scripted-async", messages=user(hanging))
    )
    assert await asyncio.to_thread(probe.started.wait, 5.0)
    async with httpx.AsyncClient() as raw:
        refused = await raw.post(
            f"{base_url(proxy)}/chat/completions", json={"model": "echo", "messages": user("b")}
        )
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "too_many_in_flight"

    # The slot frees up well within the Retry-After the SDK is told to wait.
    asyncio.get_running_loop().call_later(0.3, probe.release.set)
    began = time.monotonic()
    answer = await async_client(proxy, max_retries=2).chat.completions.create(
        model="echo", messages=user("c")
    )
    waited = time.monotonic() - began

    assert answer.choices[0].finish_reason == "stop"
    assert (await holder).choices[0].message.content == "done"
    # The SDK slept for the server's Retry-After rather than giving up or hammering.
    assert waited >= 0.9
    outcomes = [record.outcome for record in records.records]
    assert outcomes.count("TOO_MANY_IN_FLIGHT") == 2 and outcomes.count("ok") == 2


async def test_sdk_error_classes_for_a_rate_limit(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy, {"limits": {"max_requests_per_minute": 1}})
    client = async_client(proxy)
    await client.chat.completions.create(model="echo", messages=user("a"))
    error = await status_error(client.chat.completions.create(model="echo", messages=user("b")))
    assert isinstance(error, openai.RateLimitError)
    assert int(error.response.headers["retry-after"]) > 1


async def test_an_exhausted_budget_is_a_429_the_sdk_does_not_retry(
    start_proxy: ProxyFactory,
) -> None:
    prices = {"input_per_million": 1_000_000.0, "output_per_million": 1_000_000.0}
    proxy, records = await start(
        start_proxy,
        {
            "models": {"prices": {"scripted-async": prices}},
            "quotas": {"estimate_output_tokens": 4, "default": {"usd_per_day": 50.0}},
            "ledger": {"backend": "none"},
        },
    )
    spender = script(chunks=["x"], usage={"input": 10, "output": 100})
    client = async_client(proxy, max_retries=3)
    await client.chat.completions.create(model="scripted-async", messages=user(spender))

    began = time.monotonic()
    error = await status_error(
        client.chat.completions.create(model="scripted-async", messages=user("more"))
    )
    waited = time.monotonic() - began

    assert isinstance(error, openai.RateLimitError)
    assert error.response.headers["x-should-retry"] == "false"
    assert int(error.response.headers["retry-after"]) > 60
    assert "budget" in error.message
    # One refusal recorded: the SDK, told not to, did not come back three more times.
    assert [record.outcome for record in records.records] == ["ok", "BUDGET_EXHAUSTED"]
    assert waited < 5
    assert proxy.container.admission().in_flight == 0


# --------------------------------------------------------------------------- authentication


AUTH: dict[str, Any] = {"auth": {"enabled": True, "secret": SECRET}}


async def test_the_same_auth_matrix_as_grpc(start_proxy: ProxyFactory) -> None:
    proxy, records = await start(start_proxy, AUTH)
    restricted = sign(claims("bob", models=["echo"]), SECRET)

    async with httpx.AsyncClient() as raw:
        missing = await raw.post(
            f"{base_url(proxy)}/chat/completions", json={"model": "echo", "messages": user("hi")}
        )
    forged = await status_error(
        async_client(proxy, key="not-a-jwt").chat.completions.create(
            model="echo", messages=user("hi")
        )
    )
    hidden = await status_error(
        async_client(proxy, key=restricted).chat.completions.create(
            model="scripted", messages=user("hi")
        )
    )
    allowed = await async_client(proxy, key=restricted).chat.completions.create(
        model="echo", messages=user("hi")
    )
    listed = [m.id async for m in async_client(proxy, key=restricted).models.list()]

    assert missing.status_code == 401
    assert "missing credentials" in missing.json()["error"]["message"]
    assert isinstance(forged, openai.AuthenticationError) and "malformed token" in forged.message
    # A model outside the token's claim reads as unknown, as over gRPC.
    assert isinstance(hidden, openai.NotFoundError) and "scripted" in hidden.message
    assert "echo" in hidden.message
    assert allowed.choices[0].finish_reason == "stop"
    assert listed == ["echo"]
    # Unauthenticated calls never reach a use case; the refused model is recorded as such.
    assert [(r.subject, r.outcome) for r in records.records] == [
        ("bob", "PERMISSION_DENIED"),
        ("bob", "ok"),
    ]
    assert proxy.container.admission().in_flight == 0


# --------------------------------------------------------------------------- the wire itself


async def test_the_exact_server_sent_events(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    body = {
        "model": "scripted",
        "messages": user(script(chunks=["Hi", " there"], usage={"input": 2, "output": 2})),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient() as raw:
        response = await raw.post(f"{base_url(proxy)}/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])
    decoded = [json.loads(event[len("data: ") :]) for event in events[:-2]]
    request_id = response.headers["x-request-id"]
    assert {each["id"] for each in decoded} == {f"chatcmpl-{request_id}"}
    deltas = [each["choices"][0]["delta"] for each in decoded if each["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {"content": " there"},
        {},
    ]
    assert decoded[-2]["choices"][0]["finish_reason"] == "stop"
    assert decoded[-1]["choices"] == []
    assert decoded[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


async def test_an_error_after_the_first_byte_is_an_error_event(start_proxy: ProxyFactory) -> None:
    proxy, records = await start(start_proxy)
    body = {
        "model": "scripted",
        "messages": user(script(chunks=["a", "b", "c"], fail_after=1, error="went wrong")),
        "stream": True,
    }
    async with httpx.AsyncClient() as raw:
        response = await raw.post(f"{base_url(proxy)}/chat/completions", json=body)

    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert "[DONE]" not in response.text
    error = json.loads(events[-1][len("data: ") :])["error"]
    assert error["code"] == "upstream_error" and "went wrong" in error["message"]
    [record] = records.records
    assert record.outcome == "UPSTREAM_ERROR"


async def test_health_and_readiness(start_proxy: ProxyFactory) -> None:
    proxy, _ = await start(start_proxy)
    root = base_url(proxy).removesuffix("/v1")
    async with httpx.AsyncClient() as raw:
        assert (await raw.get(f"{root}/healthz")).status_code == 200
        assert (await raw.get(f"{root}/readyz")).status_code == 200
        missing = await raw.get(f"{root}/v2/nothing")
        assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]
        await proxy.running.begin_shutdown()
        assert (await raw.get(f"{root}/healthz")).status_code == 200
        assert (await raw.get(f"{root}/readyz")).status_code == 503
        late = await raw.post(f"{base_url(proxy)}/chat/completions", json={"messages": user("x")})
        assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"


@pytest.mark.parametrize("model", ["scripted", "scripted-async"])
async def test_a_client_leaving_mid_stream_stops_the_model(
    start_proxy: ProxyFactory, model: str
) -> None:
    proxy, records = await start(start_proxy)
    probe_name = f"http-cancel-{model}"
    chunks = [f"c{i} " for i in range(100)]
    body = {
        "model": model,
        "messages": user(script(chunks=chunks, delay=0.05, probe=probe_name)),
        "stream": True,
    }
    async with (
        httpx.AsyncClient() as raw,
        raw.stream("POST", f"{base_url(proxy)}/chat/completions", json=body) as response,
    ):
        async for line in response.aiter_lines():
            if "c1 " in line:
                break
    probe = scripted_models.probe(probe_name)
    # `closed` is set as the model's generator exits: nothing is produced after it.
    assert await asyncio.to_thread(probe.closed.wait, 2.0), "the model was not stopped"
    assert probe.chunks_sent < len(chunks)
    assert not probe.finished.is_set()
    [record] = await records.once_finished()
    assert record.outcome == "CANCELLED"
    assert proxy.container.admission().in_flight == 0


async def test_a_client_leaving_a_whole_completion_stops_the_model(
    start_proxy: ProxyFactory,
) -> None:
    proxy, records = await start(start_proxy)
    probe_name = "http-cancel-unary"
    body = {
        "model": "scripted-async",
        "messages": user(script(chunks=["a"], hang=True, probe=probe_name)),
    }
    async with httpx.AsyncClient() as raw:
        posting = asyncio.ensure_future(raw.post(f"{base_url(proxy)}/chat/completions", json=body))
        probe = scripted_models.probe(probe_name)
        assert await asyncio.to_thread(probe.started.wait, 5.0)
        posting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await posting
    assert await asyncio.to_thread(probe.closed.wait, 2.0), "the model was not stopped"
    assert [record.outcome for record in await records.once_finished()] == ["CANCELLED"]


@pytest.mark.parametrize(
    ("headers", "body", "needle"),
    [
        ({"x-request-id": "r" * 300}, {"model": "echo"}, "x-request-id is 300 characters"),
        ({}, {"model": "echo\nforged line"}, "model contains a control"),
        ({}, {"model": "echo", "user": "u" * 300}, "user is 300 characters"),
    ],
)
async def test_identifiers_are_short_and_printable_or_refused(
    start_proxy: ProxyFactory, headers: dict[str, str], body: dict[str, Any], needle: str
) -> None:
    proxy, records = await start(start_proxy)
    async with httpx.AsyncClient() as raw:
        response = await raw.post(
            f"{base_url(proxy)}/chat/completions",
            json={**body, "messages": user("hi")},
            headers=headers,
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert needle in error["message"] and error["code"] == "invalid_argument"
    assert "forged" not in response.text and "r" * 300 not in response.text
    [record] = records.records
    assert record.outcome == "INVALID_ARGUMENT" and len(record.request_id) <= 256


async def test_a_client_that_stops_reading_is_let_go(start_proxy: ProxyFactory) -> None:
    proxy, records = await start(start_proxy, {"limits": {"client_read_timeout_seconds": 0.5}})
    assert proxy.running.http is not None
    probe_name = "http-stalled-reader"
    body = json.dumps(
        {
            "model": "scripted-async",
            "messages": user(script(chunks=["x" * 65536], repeat=400, probe=probe_name)),
            "stream": True,
        }
    ).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.running.http.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    # Never read: the server's sends stall once the socket buffers are full.
    probe = scripted_models.probe(probe_name)
    assert await asyncio.to_thread(probe.closed.wait, 20.0), "the model was not stopped"
    [record] = await records.once_finished()
    assert record.outcome == "CLIENT_TOO_SLOW"
    assert probe.chunks_sent < 400
    assert proxy.container.admission().in_flight == 0
    writer.close()
