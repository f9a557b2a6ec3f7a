"""Operating the server as a process: reloads, draining on SIGTERM, and supervised workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.helpers import read_chunk, request, script

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BASE = (
    "server:\n  port: 0\n  grace_period_seconds: {grace}\n{server_extra}"
    "models:\n  plugin_modules: [tests.support.scripted_models]\n{models_extra}"
    "auth:\n  enabled: false\n{extra}"
)
# Own channels, hence own TCP connections: SO_REUSEPORT balances connections, not calls.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


def write_config(
    path: Path,
    *,
    grace: float = 5,
    server_extra: str = "",
    models_extra: str = "",
    extra: str = "",
) -> Path:
    path.write_text(
        BASE.format(grace=grace, server_extra=server_extra, models_extra=models_extra, extra=extra)
    )
    return path


class ServerProcess:
    """`serve` in a subprocess, its stderr collected by a thread so tests can wait for lines."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config), *extra],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 20) -> re.Match[str]:
        """The first match of `pattern` in a line at index `after` or later."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if match := regex.search(line):
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)}")
                self._changed.wait(min(remaining, 0.1))

    @property
    def port(self) -> int:
        return int(self.wait_for(r"(?:listening on|workers on) [\d.]+:(\d+)").group(1))

    @property
    def metrics_port(self) -> int:
        return int(self.wait_for(r"metrics on http://[\d.]+:(\d+)/metrics").group(1))

    def signal(self, signum: int) -> int:
        """Send a signal; returns the number of lines seen so far, for wait_for(after=...)."""
        with self._changed:
            seen = len(self.lines)
        self.process.send_signal(signum)
        return seen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[ServerProcess] = []

    def factory(config: Path, *extra: str) -> ServerProcess:
        server = ServerProcess(config, *extra)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


def _stub(port: int, **options: Any) -> tuple[grpc.aio.Channel, pb_grpc.VibectlLLMProxyAsyncStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=list(options.items()))
    stub: pb_grpc.VibectlLLMProxyAsyncStub = pb_grpc.VibectlLLMProxyStub(channel)
    return channel, stub


# --------------------------------------------------------------------------- reload


async def test_sighup_reload_changes_an_alias_without_breaking_an_open_stream(
    tmp_path: Path, spawn: Any
) -> None:
    config = write_config(tmp_path / "proxy.yaml", models_extra="  aliases: {fast: echo}\n")
    server = spawn(config)
    channel, stub = _stub(server.port)
    async with channel:
        before = await stub.Execute(request("hello", model="fast"))
        assert before.success.actual_model_used == "echo"
        chunks = [f"w{i} " for i in range(20)]
        call = stub.StreamExecute(request(script(chunks=chunks, delay=0.05), model="scripted"))
        first = await read_chunk(call)
        assert first is not None and first.text_chunk == "w0 "

        write_config(config, models_extra="  aliases: {fast: scripted}\n")
        seen = server.signal(signal.SIGHUP)
        server.wait_for(r"configuration reloaded \(SIGHUP\)", after=seen)

        rest = []
        while (chunk := await read_chunk(call)) is not None:
            rest.append(chunk)
        assert first.text_chunk + "".join(c.text_chunk for c in rest) == "".join(chunks)
        assert rest[-1].complete.actual_model_used == "scripted"
        after = await stub.Execute(request("hello", model="fast"))
        assert after.success.actual_model_used == "scripted"


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"models_extra": "  aliases: {fast: no-such-model}\n"}, "no-such-model"),
        ({"extra": "limits:\n  request_timeout_seconds: -1\n"}, "limits.request_timeout_seconds"),
        ({"extra": "limits: [unclosed\n"}, "not valid YAML"),
    ],
)
async def test_an_invalid_reload_is_rejected_and_the_old_config_stays(
    tmp_path: Path, spawn: Any, broken: dict[str, Any], reason: str
) -> None:
    config = write_config(
        tmp_path / "proxy.yaml",
        models_extra="  aliases: {fast: echo}\n",
        extra="limits:\n  max_input_length: 50\n",
    )
    server = spawn(config)
    channel, stub = _stub(server.port)
    async with channel:
        write_config(config, **broken)
        seen = server.signal(signal.SIGHUP)
        rejected = server.wait_for(r"reload \(SIGHUP\) rejected.*", after=seen)
        assert reason in "".join(server.lines[seen:])
        assert rejected
        # Both the alias and the limit of the old configuration are still in force.
        answer = await stub.Execute(request("hello", model="fast"))
        assert answer.success.actual_model_used == "echo"
        too_long = await stub.Execute(request("x" * 60, model="echo"))
        assert too_long.error.error_code == "INPUT_TOO_LONG"
    assert server.process.poll() is None


async def test_reload_on_change_applies_an_edited_file(tmp_path: Path, spawn: Any) -> None:
    def watched_config(fast: str) -> Path:
        return write_config(
            tmp_path / "proxy.yaml",
            server_extra="  reload_on_change: true\n  reload_check_seconds: 0.2\n",
            models_extra=f"  aliases: {{fast: {fast}}}\n",
        )

    server = spawn(watched_config("echo"))
    channel, stub = _stub(server.port)
    async with channel:
        watched_config("scripted")
        server.wait_for(r"configuration reloaded \(.*changed\)")
        answer = await stub.Execute(request("hello", model="fast"))
        assert answer.success.actual_model_used == "scripted"


# --------------------------------------------------------------------------- shutdown


async def test_sigterm_drains_twenty_open_streams_and_refuses_new_calls(
    tmp_path: Path, spawn: Any
) -> None:
    server = spawn(write_config(tmp_path / "proxy.yaml", grace=10))
    channel, stub = _stub(server.port)
    chunks = [f"c{i} " for i in range(10)]
    async with channel:
        calls = [
            stub.StreamExecute(request(script(chunks=chunks, delay=0.1), model="scripted"))
            for _ in range(20)
        ]
        firsts = await asyncio.gather(*(read_chunk(call) for call in calls))
        assert all(first is not None and first.text_chunk == "c0 " for first in firsts)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Execute(request("late", model="echo"), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        async def rest(call: Any) -> list[pb.StreamChunk]:
            chunks = []
            while (chunk := await read_chunk(call)) is not None:
                chunks.append(chunk)
            return chunks

        remainders = await asyncio.gather(*(rest(call) for call in calls))
    for first, remainder in zip(firsts, remainders, strict=True):
        assert first is not None
        assert first.text_chunk + "".join(c.text_chunk for c in remainder) == "".join(chunks)
        assert remainder[-1].WhichOneof("chunk_type") == "complete"
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - signalled < 10


async def test_health_goes_not_serving_while_calls_still_work_during_the_shutdown_delay(
    tmp_path: Path, spawn: Any
) -> None:
    server = spawn(
        write_config(tmp_path / "proxy.yaml", server_extra="  shutdown_delay_seconds: 2\n")
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="")
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub: pb_grpc.VibectlLLMProxyAsyncStub = pb_grpc.VibectlLLMProxyStub(channel)
        answer = await stub.Execute(request("hi", model="echo"))
        assert answer.WhichOneof("result") == "success"
    assert server.process.wait(timeout=10) == 0


async def _cut_off_as_unavailable(call: Any) -> None:
    """Reads `call` to its end, which must be UNAVAILABLE: a client may retry that elsewhere,
    which is what a drained replica wants."""

    async def drain() -> None:
        while await read_chunk(call) is not None:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await drain()
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_stream_longer_than_the_grace_period_is_cut_with_a_status(
    tmp_path: Path, spawn: Any
) -> None:
    server = spawn(write_config(tmp_path / "proxy.yaml", grace=1))
    channel, stub = _stub(server.port)
    async with channel:
        call = stub.StreamExecute(request(script(chunks=["a"] * 100, delay=0.1), model="scripted"))
        assert await read_chunk(call) is not None
        server.signal(signal.SIGTERM)
        await _cut_off_as_unavailable(call)
    assert server.process.wait(timeout=10) == 0


# --------------------------------------------------------------------------- workers


# Label order differs between single-process and multiprocess exposition: match either.
_UNARY_ECHO_OK = re.compile(
    r"^llm_proxy_requests_total\{(?=[^}]*method=\"unary\")(?=[^}]*transport=\"grpc\")"
    r"(?=[^}]*model=\"echo\")(?=[^}]*outcome=\"ok\")[^}]*\} (\S+)$",
    re.MULTILINE,
)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def _worker_pids(text: str) -> set[int]:
    return {int(pid) for pid in re.findall(r'llm_proxy_worker_up\{pid="(\d+)"\} 1\.0', text)}


def _wait_for_pids(
    server: ServerProcess, port: int, predicate: Any, timeout: float = 30
) -> set[int]:
    """Worker pids in /metrics once they satisfy `predicate`, each worker then listening.

    A worker is in /metrics from the moment it builds its metrics, before it listens: until
    it does, the kernel hands every new connection to the others."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _worker_pids(_scrape(port))
        if predicate(pids):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"worker pids never satisfied the test: {pids}")
        time.sleep(0.1)
    for pid in pids:
        server.wait_for(rf"listening on .* pid {pid},", timeout=max(deadline - time.monotonic(), 1))
    return pids


async def test_two_workers_share_the_port_and_a_killed_one_is_replaced(
    tmp_path: Path, spawn: Any
) -> None:
    config = write_config(tmp_path / "proxy.yaml", extra="metrics:\n  enabled: true\n  port: 0\n")
    server = spawn(config, "--workers", "2")
    port, metrics_port = server.port, server.metrics_port
    pids = _wait_for_pids(server, metrics_port, lambda found: len(found) == 2)

    async def call_on_new_connections(count: int) -> None:
        for i in range(count):
            channel, stub = _stub(port, **dict(OWN_CONNECTION))
            async with channel:
                answer = await stub.Execute(request("hi", model="echo", request_id=f"w-{i}"))
                assert answer.WhichOneof("result") == "success"

    await call_on_new_connections(30)

    def serving() -> set[int]:
        # Each worker logs its own request lines, tagged with its pid.
        return {
            int(match.group(1))
            for line in server.lines
            if (match := re.search(r"\[(\d+)\] llm_proxy\.requests: request_id=w-", line))
        }

    # Request lines are written in batches within 0.1 s; allow for that and a slow reader.
    deadline = time.monotonic() + 5
    while serving() != pids and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert serving() == pids
    text = _scrape(metrics_port)
    total = _UNARY_ECHO_OK.search(text)
    assert total is not None and float(total.group(1)) == 30

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    replaced = _wait_for_pids(
        server, metrics_port, lambda found: len(found) == 2 and victim not in found
    )
    assert len(replaced - pids) == 1
    await call_on_new_connections(10)
    # Counters of the dead worker still count: the total only grows.
    text = _scrape(metrics_port)
    total = _UNARY_ECHO_OK.search(text)
    assert total is not None and float(total.group(1)) == 40

    server.signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0
    for pid in replaced:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _listening_workers(server: ServerProcess, count: int, *, after: int = 0) -> list[int]:
    """Pids of the next `count` workers started after line `after`, once each listens."""
    pids = [
        int(server.wait_for(rf"worker {index} started: pid (\d+)", after=after).group(1))
        for index in range(count)
    ]
    for pid in pids:
        server.wait_for(rf"listening on .* pid {pid},", after=after)
    return pids


async def _models_answering(port: int, model: str, calls: int = 8) -> set[str]:
    """What `model` resolves to, asked on `calls` fresh connections (so across the workers);
    the status name for a call that fails."""
    found: set[str] = set()
    for i in range(calls):
        channel, stub = _stub(port, **dict(OWN_CONNECTION))
        async with channel:
            answer = await stub.Execute(request("hi", model=model, request_id=f"m-{i}"))
        kind = answer.WhichOneof("result")
        found.add(
            answer.success.actual_model_used if kind == "success" else answer.error.error_code
        )
    return found


async def _two_workers_serving_fast_as_echo(
    tmp_path: Path, spawn: Any
) -> tuple[Path, ServerProcess, list[int]]:
    """A server of two workers, each answering the alias `fast` with echo; and their pids."""
    config = write_config(tmp_path / "proxy.yaml", models_extra="  aliases: {fast: echo}\n")
    server = spawn(config, "--workers", "2")
    pids = _listening_workers(server, 2)
    assert await _models_answering(server.port, "fast") == {"echo"}
    return config, server, pids


async def test_sighup_reaches_every_worker(tmp_path: Path, spawn: Any) -> None:
    config, server, pids = await _two_workers_serving_fast_as_echo(tmp_path, spawn)
    port = server.port

    write_config(config, models_extra="  aliases: {fast: scripted}\n")
    seen = server.signal(signal.SIGHUP)
    for pid in pids:
        server.wait_for(rf"\[{pid}\] .*configuration reloaded \(SIGHUP\)", after=seen)
    assert await _models_answering(port, "fast") == {"scripted"}


async def test_a_replaced_worker_serves_the_configuration_as_it_is_now(
    tmp_path: Path, spawn: Any
) -> None:
    """Workers are forked from a supervisor that loaded the catalog at start; one that
    replaces a dead worker still reads the file as it is then, as a fresh process would."""
    config, server, pids = await _two_workers_serving_fast_as_echo(tmp_path, spawn)
    port = server.port

    # No SIGHUP: only the replacements read the change.
    write_config(config, models_extra="  aliases: {fast: scripted, quick: echo}\n")
    seen = len(server.lines)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    replaced = _listening_workers(server, 2, after=seen)
    assert not set(replaced) & set(pids)
    assert await _models_answering(port, "fast") == {"scripted"}
    assert await _models_answering(port, "quick") == {"echo"}

    server.signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0


def _listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:port, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if local == f"0100007F:{port:04X}" and state == "0A":
            return inode
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def test_workers_do_not_hold_the_supervisors_own_sockets(tmp_path: Path, spawn: Any) -> None:
    """Forked workers inherit every descriptor; the ones only the supervisor uses (its
    /metrics listener, the port reservations) are closed, so a worker that outlives a killed
    supervisor does not keep its /metrics port."""
    config = write_config(tmp_path / "proxy.yaml", extra="metrics:\n  enabled: true\n  port: 0\n")
    server = spawn(config, "--workers", "2")
    metrics = _listening_inode(server.metrics_port)
    assert metrics in _socket_inodes(server.process.pid)
    for pid in _listening_workers(server, 2):
        assert metrics not in _socket_inodes(pid)


async def test_a_second_sigterm_cancels_what_is_left_at_once(tmp_path: Path, spawn: Any) -> None:
    server = spawn(write_config(tmp_path / "proxy.yaml", grace=60))
    channel, stub = _stub(server.port)
    async with channel:
        call = stub.StreamExecute(request(script(chunks=["a"] * 600, delay=0.1), model="scripted"))
        assert await read_chunk(call) is not None
        seen = server.signal(signal.SIGTERM)
        server.wait_for(r"draining in-flight calls", after=seen)
        hurried = time.monotonic()
        server.signal(signal.SIGTERM)
        await _cut_off_as_unavailable(call)
    assert server.process.wait(timeout=10) == 0
    # Far sooner than the 60 s grace period.
    assert time.monotonic() - hurried < 10
