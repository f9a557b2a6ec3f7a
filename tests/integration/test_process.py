"""The server as an operator runs it: a subprocess started from the command line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.helpers import read_chunk, request, script
from tests.support.commands import run_cli

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


def _spawn(config: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config), *extra],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def _port_of(process: subprocess.Popen[str], seen: list[str]) -> int:
    assert process.stderr is not None
    for line in process.stderr:
        seen.append(line)
        match = LISTENING.search(line)
        if match:
            return int(match.group(1))
    raise AssertionError("server exited before listening:\n" + "".join(seen))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        "server:\n  port: 0\n  grace_period_seconds: 5\n"
        "models:\n  plugin_modules: [tests.support.scripted_models]\n"
        "auth:\n  enabled: false\n"
    )
    return path


@pytest.fixture
def server(config_file: Path) -> Iterator[tuple[subprocess.Popen[str], int, list[str]]]:
    process = _spawn(config_file)
    seen: list[str] = []
    try:
        yield process, _port_of(process, seen), seen
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def test_sigterm_lets_an_in_flight_stream_finish_then_exits_zero(
    server: tuple[subprocess.Popen[str], int, list[str]],
) -> None:
    process, port, _ = server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        chunks = [f"w{i} " for i in range(20)]
        call = stub.StreamExecute(request(script(chunks=chunks, delay=0.05), model="scripted"))
        first = await read_chunk(call)
        assert first is not None
        assert first.text_chunk == "w0 "
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        # New calls are refused once shutdown has begun...
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Execute(request("late", model="echo"), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # ...while the stream already in flight runs to its end.
        rest = []
        while (chunk := await read_chunk(call)) is not None:
            rest.append(chunk)
    text = first.text_chunk + "".join(c.text_chunk for c in rest)
    assert text == "".join(chunks)
    assert rest[-1].WhichOneof("chunk_type") == "complete"
    assert process.wait(timeout=10) == 0


def test_sigint_exits_zero_when_idle(server: tuple[subprocess.Popen[str], int, list[str]]) -> None:
    process, _, _ = server
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0


def test_request_log_has_one_line_per_request_without_prompt_text(
    server: tuple[subprocess.Popen[str], int, list[str]],
) -> None:
    process, port, seen = server
    secret_prompt = "my-very-private-prompt-text"

    async def call() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.VibectlLLMProxyStub(channel)
            await stub.Execute(request(secret_prompt, model="echo", request_id="log-1"))
            await stub.GetServerInfo(pb.GetServerInfoRequest())

    asyncio.run(call())
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    seen.extend(process.stderr.read().splitlines(keepends=True))
    process.wait(timeout=10)
    request_lines = [line for line in seen if "request_id=log-1" in line]
    assert len(request_lines) == 1
    line = request_lines[0]
    assert "model=echo" in line and "outcome=ok" in line and "duration_ms=" in line
    assert "input_tokens=" in line
    assert secret_prompt not in "".join(seen)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("server:\n  port: not-a-port\n", "server.port"),
        ("server:\n  prot: 1\n", "server.prot: unknown key"),
        ("limits:\n  request_timeout_seconds: -1\n", "limits.request_timeout_seconds"),
        ("server: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_broken_config_file_exits_2_naming_the_problem(
    tmp_path: Path, content: str, expected: str
) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(content)
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(
    server: tuple[subprocess.Popen[str], int, list[str]], tmp_path: Path
) -> None:
    _, port, _ = server
    config = tmp_path / "second.yaml"
    config.write_text(f"server:\n  port: {port}\nauth:\n  enabled: false\n")
    result = run_cli("serve", "--config", str(config))
    assert result.returncode != 0
    # One line of our own (after the log's warning about auth being off): no grpc C-core line
    # (add_port.cc), no traceback.
    assert result.stderr.strip().splitlines()[-1] == (
        f"llm-proxy: cannot listen on 127.0.0.1:{port}: the port is already in use "
        "(another server?); pick another with --port"
    )
    assert "add_port" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_http_port_names_the_http_port_option(tmp_path: Path, workers: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        config = tmp_path / "http.yaml"
        config.write_text("server:\n  port: 0\nauth:\n  enabled: false\n")
        result = run_cli(
            "serve", "-c", str(config), "--workers", workers, "--http-port", str(taken), timeout=60
        )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"llm-proxy: cannot listen on 127.0.0.1:{taken}: the port is already in use "
        "(another server?); pick another with --http-port"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_alias_to_an_unserved_model_exits_2_with_one_line(tmp_path: Path, workers: str) -> None:
    config = tmp_path / "alias.yaml"
    config.write_text(
        "server:\n  port: 0\nauth:\n  enabled: false\n"
        "models:\n  serve: [echo]\n  aliases: {fast: markov}\n"
    )
    result = run_cli("serve", "-c", str(config), "--workers", workers)
    assert result.returncode == 2, result.stderr
    problems = [line for line in result.stderr.splitlines() if line.startswith("llm-proxy:")]
    # One line per process that tried to start, naming the key and the model it points at.
    assert problems
    assert set(problems) == {
        "llm-proxy: models.aliases.fast: points at 'markov', which is not served; served: echo"
    }
    assert "Traceback" not in result.stderr
    if workers == "1":
        assert result.stderr.strip() == problems[0]
