"""LlmGateway: running prompts on sync and async llm models, usage, schemas, error mapping."""

from __future__ import annotations

import json

import pytest

from adapters.llm import LlmGateway
from domain.answer import GatewayEvent, TextChunk, UsageReport
from domain.errors import (
    InvalidRequest,
    ModelUnavailable,
    UnknownModel,
    UpstreamFailure,
)
from domain.request import JsonObject, ModelInvocation
from domain.usage import Usage
from tests.support import scripted_models
from tests.unit.llm_adapter.conftest import MakeRegistry
from tests.unit.llm_adapter.helpers import invocation, new_probe_name, script

BOTH = pytest.mark.parametrize("model", ["scripted", "scripted-async"])


async def collect(gateway: LlmGateway, call: ModelInvocation) -> list[GatewayEvent]:
    return [event async for event in gateway.stream(call)]


@BOTH
async def test_complete_returns_text_and_usage(gateway: LlmGateway, model: str) -> None:
    prompt = script(chunks=["Hello", ", ", "world"], usage={"input": 3, "output": 5})
    output = await gateway.complete(invocation(model, prompt))
    assert output.text == "Hello, world"
    assert output.usage == Usage(input_tokens=3, output_tokens=5)


@BOTH
async def test_stream_yields_chunks_then_one_usage_report(gateway: LlmGateway, model: str) -> None:
    events = await collect(gateway, invocation(model, script(chunks=["a", "b", "c"], usage={})))
    assert events[:3] == [TextChunk("a"), TextChunk("b"), TextChunk("c")]
    # An empty usage mapping is reported by the script as zero tokens.
    assert events[3:] == [UsageReport(Usage(input_tokens=0, output_tokens=0))]


@BOTH
async def test_usage_is_unknown_when_the_model_reports_none(
    gateway: LlmGateway, model: str
) -> None:
    output = await gateway.complete(invocation(model, script(chunks=["x"])))
    assert output.usage == Usage(input_tokens=None, output_tokens=None)


async def test_async_implementation_is_preferred(gateway: LlmGateway) -> None:
    sync_name, async_name = new_probe_name(), new_probe_name()
    await gateway.complete(invocation("scripted", script(chunks=["x"], probe=sync_name)))
    await gateway.complete(invocation("scripted-async", script(chunks=["x"], probe=async_name)))
    assert scripted_models.PROBES[sync_name].implementation == "sync"
    assert scripted_models.PROBES[async_name].implementation == "async"


async def test_llm_echo_sees_fragments_system_and_stream_flag(gateway: LlmGateway) -> None:
    call = invocation("echo", "first part", "second part", system=["be brief", "be kind"])
    completed = json.loads((await gateway.complete(call)).text)
    streamed = json.loads(
        "".join(e.text for e in await collect(gateway, call) if isinstance(e, TextChunk))
    )
    # llm joins user fragments with newlines and system fragments with blank lines.
    assert completed["prompt"] == "first part\nsecond part"
    assert completed["system"] == "be brief\n\nbe kind"
    assert (completed["stream"], streamed["stream"]) == (False, True)


async def test_sync_only_plugin_model_streams_through_a_thread(gateway: LlmGateway) -> None:
    events = await collect(gateway, invocation("markov", "the cat sat on the mat"))
    chunks = [event for event in events if isinstance(event, TextChunk)]
    # llm-markov emits its default 100 words one chunk at a time, drawn from the prompt.
    assert len(chunks) == 100
    assert {chunk.text.strip() for chunk in chunks} <= {"the", "cat", "sat", "on", "mat"}
    assert events[-1] == UsageReport(Usage())


@BOTH
async def test_system_fragments_reach_the_model(gateway: LlmGateway, model: str) -> None:
    name = new_probe_name()
    call = invocation(
        model, script(chunks=["ok"], echo_system=True, probe=name), system=["rule one", "two"]
    )
    output = await gateway.complete(call)
    assert output.text == "[system: rule one\n\ntwo]ok"
    assert scripted_models.PROBES[name].system == "rule one\n\ntwo"


@BOTH
async def test_echoes_plain_prompts_in_several_chunks(gateway: LlmGateway, model: str) -> None:
    events = await collect(gateway, invocation(model, "one two three four five six"))
    chunks = [event.text for event in events if isinstance(event, TextChunk)]
    assert len(chunks) == 3
    assert "".join(chunks) == "one two three four five six"
    assert events[-1] == UsageReport(Usage(input_tokens=6, output_tokens=6))


@BOTH
async def test_schema_is_passed_to_the_model(gateway: LlmGateway, model: str) -> None:
    schema: JsonObject = {"type": "object", "properties": {"name": {"type": "string"}}}
    output = await gateway.complete(invocation(model, "describe a cat", schema=schema))
    assert json.loads(output.text) == {"schema_seen": schema}


async def test_unknown_model_lists_what_is_served(gateway: LlmGateway) -> None:
    with pytest.raises(UnknownModel) as raised:
        await gateway.complete(invocation("gpt-x", "hi"))
    assert "markov" in raised.value.available


async def test_a_request_resolved_before_a_reload_runs_the_model_it_resolved(
    make_registry: MakeRegistry,
) -> None:
    registry = make_registry()
    gateway = LlmGateway(registry)
    try:
        resolved = registry.current().resolve("markov")
        registry.prepare_reconfigure(serve=["echo"], aliases=None, default_model=None)()
        # New requests cannot resolve it any more...
        with pytest.raises(UnknownModel):
            registry.current().resolve("markov")
        # ...but the one that did still gets the model it was admitted for.
        output = await gateway.complete(invocation(resolved.model_id, "hi"))
        assert output.text
    finally:
        gateway.close()


@BOTH
async def test_plugin_failure_is_an_upstream_error_without_the_prompt(
    gateway: LlmGateway, model: str
) -> None:
    prompt = script(chunks=["a", "b"], fail_after=1, error="provider exploded", secret="hunter2")
    with pytest.raises(UpstreamFailure) as raised:
        await gateway.complete(invocation(model, prompt))
    assert raised.value.message == (f"model {model!r} failed: ScriptedError: provider exploded")
    assert "hunter2" not in str(raised.value)


@BOTH
async def test_stream_delivers_chunks_before_a_failure(gateway: LlmGateway, model: str) -> None:
    received: list[GatewayEvent] = []

    async def consume() -> None:
        prompt = script(chunks=["a", "b"], fail_after=1, error="provider exploded")
        async for event in gateway.stream(invocation(model, prompt)):
            received.append(event)

    with pytest.raises(UpstreamFailure, match="provider exploded"):
        await consume()
    assert received == [TextChunk("a")]


@BOTH
@pytest.mark.parametrize(
    ("error_type", "domain_error", "fragment"),
    [
        ("timeout", UpstreamFailure, "timed out upstream (ScriptedTimeout: slow)"),
        ("validation", InvalidRequest, "rejected the request: count: Input should be"),
        ("needs_key", ModelUnavailable, "has no API key on this server"),
    ],
)
async def test_error_mapping(
    gateway: LlmGateway,
    model: str,
    error_type: str,
    domain_error: type[Exception],
    fragment: str,
) -> None:
    with pytest.raises(domain_error) as raised:
        await gateway.complete(invocation(model, script(error="slow", error_type=error_type)))
    assert fragment in str(raised.value)


@pytest.mark.parametrize("streamed", [False, True])
async def test_missing_key_says_how_to_add_one(make_registry: MakeRegistry, streamed: bool) -> None:
    gateway = LlmGateway(make_registry(serve=["echo-needs-key"]))
    call = invocation("echo-needs-key", "hi")
    try:
        with pytest.raises(ModelUnavailable) as raised:
            await (collect(gateway, call) if streamed else gateway.complete(call))
    finally:
        gateway.close()
    assert "llm keys set echo-needs-key" in raised.value.message
    assert "LLM_ECHO_NEEDS_KEY_KEY" in raised.value.message


async def test_key_added_after_load_is_picked_up(
    make_registry: MakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = LlmGateway(make_registry(serve=["echo-needs-key"]))
    try:
        monkeypatch.setenv("LLM_ECHO_NEEDS_KEY_KEY", "sk-late")
        output = await gateway.complete(invocation("echo-needs-key", "hi"))
        assert json.loads(output.text)["key"] == "sk-late"
    finally:
        gateway.close()


async def test_closed_gateway_refuses_sync_calls(gateway: LlmGateway) -> None:
    gateway.close()
    with pytest.raises(ModelUnavailable, match="shutting down"):
        await gateway.complete(invocation("scripted", "hi"))
