"""Health, reflection, metrics, tracing and prompt logging, against the real server in-process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
from dependency_injector import providers
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.tracing import build_provider
from infrastructure.log import REQUEST_LOGGER
from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import collect, request, sample, scrape, script

PROXY_SERVICE = "vibectl.llm_proxy.VibectlLLMProxy"
METRICS_ON = {"metrics": {"enabled": True, "port": 0}}
PRICES = {"scripted": {"input_per_million": 1_000_000.0, "output_per_million": 2_000_000.0}}


async def _status(channel: grpc.aio.Channel, service: str) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


# --------------------------------------------------------------------------- health


async def test_health_is_serving_then_not_serving_once_shutdown_begins(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy()
    assert await _status(proxy.channel, "") == "SERVING"
    assert await _status(proxy.channel, PROXY_SERVICE) == "SERVING"
    await proxy.running.begin_shutdown()
    # Calls are still answered while load balancers notice; health says go elsewhere.
    assert await _status(proxy.channel, "") == "NOT_SERVING"
    assert await _status(proxy.channel, PROXY_SERVICE) == "NOT_SERVING"
    answer = await proxy.stub.Execute(request("still here", model="echo"))
    assert answer.WhichOneof("result") == "success"


async def test_health_watch_sees_the_shutdown(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy()
    stub = health_pb2_grpc.HealthStub(proxy.channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=PROXY_SERVICE))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    await proxy.running.begin_shutdown()
    second = await asyncio.wait_for(watch.read(), 2)
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


async def test_health_and_reflection_can_be_turned_off(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"server": {"health": False, "reflection": False}})
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _status(proxy.channel, "")
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as no_reflection:
        await _list_services(proxy.channel)
    assert no_reflection.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------- reflection


async def _list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names: list[str] = []
    async for response in call:
        names.extend(service.name for service in response.list_services_response.service)
    return names


async def test_reflection_lists_the_proxy_service_and_describes_it(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy()
    names = await _list_services(proxy.channel)
    assert PROXY_SERVICE in names
    assert "grpc.health.v1.Health" in names
    stub = reflection_pb2_grpc.ServerReflectionStub(proxy.channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=PROXY_SERVICE)])
    )
    responses = [response async for response in call]
    assert responses[0].file_descriptor_response.file_descriptor_proto


# --------------------------------------------------------------------------- metrics


async def test_metrics_count_real_calls_by_method_model_and_outcome(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy({**METRICS_ON, "models": {"prices": PRICES}})
    port = proxy.running.metrics_port
    assert port is not None
    for _ in range(3):
        await proxy.stub.Execute(
            request(script(chunks=["a"], usage={"input": 2, "output": 3}), model="scripted")
        )
    await collect(proxy.stub.StreamExecute(request(script(chunks=["x", "y"]), model="scripted")))
    await proxy.stub.Execute(request("hi", model="no-such-model-from-a-client"))
    await proxy.stub.Execute(
        request(script(chunks=["a"], error="boom", fail_after=0), model="scripted")
    )
    text = scrape(port)

    requests = "llm_proxy_requests_total"
    assert (
        sample(text, requests, method="unary", transport="grpc", model="scripted", outcome="ok")
        == 3
    )
    assert (
        sample(text, requests, method="stream", transport="grpc", model="scripted", outcome="ok")
        == 1
    )
    # The unknown name a client sent is not a label value: it is counted as model="none".
    assert (
        sample(
            text,
            requests,
            method="unary",
            transport="grpc",
            model="none",
            outcome="MODEL_NOT_FOUND",
        )
        == 1
    )
    assert "no-such-model-from-a-client" not in text
    assert (
        sample(text, "llm_proxy_upstream_errors_total", model="scripted", code="UPSTREAM_ERROR")
        == 1
    )
    assert (
        sample(
            text,
            "llm_proxy_request_duration_seconds_count",
            method="unary",
            transport="grpc",
            model="scripted",
        )
        == 4
    )
    assert sample(text, "llm_proxy_time_to_first_chunk_seconds_count", model="scripted") == 1
    tokens = "llm_proxy_tokens_total"
    assert sample(text, tokens, model="scripted", subject="anonymous", direction="input") == 6
    assert sample(text, tokens, model="scripted", subject="anonymous", direction="output") == 9
    # 6 input tokens at $1 each and 9 output tokens at $2 each.
    assert sample(text, "llm_proxy_cost_usd_total", model="scripted", subject="anonymous") == 24
    assert sample(text, "llm_proxy_in_flight_requests", method="unary", transport="grpc") == 0
    assert sample(text, "llm_proxy_worker_up") == 1


async def test_in_flight_gauge_counts_open_streams_and_cancellations_are_counted(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy(METRICS_ON)
    port = proxy.running.metrics_port
    assert port is not None
    calls = [
        proxy.stub.StreamExecute(request(script(chunks=["a", "b"], delay=5), model="scripted"))
        for _ in range(3)
    ]
    for _ in range(100):
        text = scrape(port)
        if sample(text, "llm_proxy_in_flight_requests", method="stream", transport="grpc") == 3:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"three open streams never showed:\n{text}")
    for call in calls:
        call.cancel()
    for _ in range(100):
        text = scrape(port)
        if sample(text, "llm_proxy_in_flight_requests", method="stream", transport="grpc") == 0:
            break
        await asyncio.sleep(0.05)
    assert sample(text, "llm_proxy_in_flight_requests", method="stream", transport="grpc") == 0
    assert sample(text, "llm_proxy_cancellations_total", method="stream", transport="grpc") == 3


async def test_metrics_are_off_by_default(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy()
    assert proxy.running.metrics_port is None
    assert proxy.container.metrics() is None


# --------------------------------------------------------------------------- tracing


async def test_tracing_records_transport_use_case_and_model_spans_in_one_trace(
    start_proxy: ProxyFactory,
) -> None:
    exporter = InMemorySpanExporter()
    provider = build_provider(
        service_name="test", exporter="none", processors=(SimpleSpanProcessor(exporter),)
    )
    proxy = await start_proxy(
        {"tracing": {"enabled": True, "exporter": "none"}},
        tracer_provider=providers.Object(provider),
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent_span = "00f067aa0ba902b7"
    metadata = (("traceparent", f"00-{trace_id}-{parent_span}-01"),)
    await proxy.stub.Execute(
        request(script(chunks=["a"], usage={"input": 1, "output": 2}), model="scripted"),
        metadata=metadata,
    )
    await collect(proxy.stub.StreamExecute(request("hello there", model="echo")))
    spans = {span.name: span for span in exporter.get_finished_spans()}

    transport = spans[f"{PROXY_SERVICE}/Execute"]
    use_case = spans["llm_proxy.ExecutePrompt"]
    model = spans["llm_proxy.model.complete"]
    assert transport.kind == SpanKind.SERVER
    # The caller's trace continues: same trace id, the caller's span as parent.
    assert format(transport.context.trace_id, "032x") == trace_id
    assert transport.parent is not None
    assert format(transport.parent.span_id, "016x") == parent_span
    assert use_case.parent is not None and use_case.parent.span_id == transport.context.span_id
    assert model.parent is not None and model.parent.span_id == use_case.context.span_id
    assert model.kind == SpanKind.CLIENT
    assert use_case.attributes is not None and use_case.attributes["llm_proxy.model"] == "scripted"
    assert model.attributes is not None
    assert model.attributes["gen_ai.usage.output_tokens"] == 2

    stream_transport = spans[f"{PROXY_SERVICE}/StreamExecute"]
    stream_use_case = spans["llm_proxy.StreamPrompt"]
    stream_model = spans["llm_proxy.model.stream"]
    assert stream_use_case.parent is not None
    assert stream_use_case.parent.span_id == stream_transport.context.span_id
    assert stream_model.parent is not None
    assert stream_model.parent.span_id == stream_use_case.context.span_id
    assert stream_use_case.attributes is not None
    assert stream_use_case.attributes["llm_proxy.outcome"] == "ok"
    # A new trace, not the first call's.
    assert stream_transport.context.trace_id != transport.context.trace_id


async def test_tracing_off_builds_no_tracer(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy()
    assert proxy.container.tracer_provider() is None
    assert proxy.container.tracer() is None


# --------------------------------------------------------------------------- prompt logging


async def test_prompts_are_logged_only_when_enabled(
    start_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    quiet = await start_proxy()
    await quiet.stub.Execute(request("quiet secret prompt", model="echo", request_id="quiet-1"))
    loud = await start_proxy({"logging": {"log_prompts": True}})
    await loud.stub.Execute(request("audited prompt", model="echo", request_id="loud-1"))
    await collect(
        loud.stub.StreamExecute(request("streamed prompt", model="echo", request_id="loud-2"))
    )
    by_id = {
        getattr(r, "fields", {}).get("request_id"): r
        for r in caplog.records
        if r.name == REQUEST_LOGGER
    }
    assert "quiet secret prompt" not in by_id["quiet-1"].getMessage()
    assert "prompt" not in by_id["quiet-1"].fields  # type: ignore[attr-defined]
    loud_fields = by_id["loud-1"].fields  # type: ignore[attr-defined]
    assert loud_fields["prompt"] == "audited prompt"
    assert "audited prompt" in loud_fields["answer"]
    assert "prompt='audited prompt'" in by_id["loud-1"].getMessage()
    stream_fields = by_id["loud-2"].fields  # type: ignore[attr-defined]
    assert stream_fields["prompt"] == "streamed prompt"
    assert "streamed prompt" in stream_fields["answer"]


# --------------------------------------------------------------------------- health command


async def test_health_command_exits_zero_only_while_serving(start_proxy: ProxyFactory) -> None:
    from click.testing import CliRunner

    from infrastructure.cli import main

    proxy = await start_proxy()
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["health", *args])
        return result.exit_code, result.output

    # The probe is a blocking client; the server under test runs on this loop.
    code, output = await asyncio.to_thread(run, "--address", proxy.address)
    assert (code, output.strip()) == (0, f"{proxy.address}: SERVING")
    code, _ = await asyncio.to_thread(run, "--address", proxy.address, "--service", PROXY_SERVICE)
    assert code == 0
    await proxy.running.begin_shutdown()
    code, output = await asyncio.to_thread(run, "--address", proxy.address)
    assert code == 1 and "NOT_SERVING" in output
    code, output = await asyncio.to_thread(run, "--address", "127.0.0.1:1", "--timeout", "1")
    assert code == 1 and "127.0.0.1:1" in output


# --------------------------------------------------------------------------- zero cost when off

_SERVE_ONCE = """
import asyncio, sys
from llm_proxy_client.generated import llm_proxy_pb2 as pb, llm_proxy_pb2_grpc as pb_grpc
import grpc
from infrastructure.config.loader import validate
from infrastructure.server_runner import build_container, start

async def main():
    settings = validate({"server": {"port": 0}, "auth": {"enabled": False}})
    container = build_container(settings)
    running = await start(container)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        ask = pb.ExecuteRequest(user_fragments=["hi"], model_name="echo")
        answer = await stub.Execute(ask)
        assert answer.WhichOneof("result") == "success"
        await collect(stub.StreamExecute(ask))
    await running.stop(0)
    container.gateway().close()
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    print(" ".join(loaded))

async def collect(call):
    return [chunk async for chunk in call]

asyncio.run(main())
"""


def test_with_tracing_and_metrics_off_their_libraries_are_never_imported() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _SERVE_ONCE],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(result.stdout.split())
    assert "grpc" in loaded  # the probe did run a server
    assert "opentelemetry" not in loaded
    assert "prometheus_client" not in loaded


async def test_health_command_speaks_mutual_tls(start_proxy: ProxyFactory, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from infrastructure import certificates
    from infrastructure.cli import main

    pki = certificates.generate(("127.0.0.1", "localhost"), ("prober",), days=1)
    files = {
        "ca": pki.ca.cert_pem,
        "server": pki.server.cert_pem,
        "server-key": pki.server.key_pem,
        "client": pki.clients["prober"].cert_pem,
        "client-key": pki.clients["prober"].key_pem,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    tls = {
        "cert_file": str(tmp_path / "server"),
        "key_file": str(tmp_path / "server-key"),
        "client_ca_file": str(tmp_path / "ca"),
    }
    proxy = await start_proxy({"server": {"tls": tls}})
    runner = CliRunner()

    def run(*args: str) -> int:
        return runner.invoke(main, ["health", "--address", proxy.address, *args]).exit_code

    tls_args = ["--ca-file", str(tmp_path / "ca")]
    client_args = [
        "--cert-file",
        str(tmp_path / "client"),
        "--key-file",
        str(tmp_path / "client-key"),
    ]
    assert await asyncio.to_thread(run, *tls_args, *client_args) == 0
    # Without a client certificate the handshake, and so the probe, fails.
    assert await asyncio.to_thread(run, *tls_args, "--timeout", "1") == 1
    assert await asyncio.to_thread(run, "--timeout", "1") == 1
