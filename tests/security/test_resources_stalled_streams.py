"""Streams nobody reads (issue 10, item 1), against `serve` as an operator runs it.

The attacker is a raw HTTP/2 client (tests/support/stalled_h2.py) that opens StreamExecute
calls with a flow-control window of 0 and never reads: the server may not send it a byte. Before
the fix such streams held their admission slots, their model and their whole answer in memory
for as long as the client stayed connected. Now a stream whose client reads nothing for
limits.client_read_timeout_seconds, or that outlives limits.request_timeout_seconds, is
cancelled while the client is still connected: its slot comes back, its model is stopped, and
at most a bounded part of its answer ever waited in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.helpers import sample, scrape
from tests.security.served import SCRIPTED_PLUGIN, Served, serve
from tests.support.stalled_h2 import StalledClient

pytestmark = pytest.mark.slow


def config(**limits: object) -> str:
    lines = "".join(f"  {key}: {value}\n" for key, value in limits.items())
    return (
        "server:\n  port: 0\n  grace_period_seconds: 1\n"
        f"models:\n  plugin_modules: [{SCRIPTED_PLUGIN}]\n"
        "auth:\n  enabled: false\n"
        "metrics:\n  enabled: true\n  port: 0\n"
        f"limits:\n{lines}"
    )


def big_answer(kib: int, probe_file: Path | None = None) -> pb.ExecuteRequest:
    spec: dict[str, object] = {"chunks": ["x" * 1024], "repeat": kib}
    if probe_file is not None:
        spec["probe_file"] = str(probe_file)
    return pb.ExecuteRequest(user_fragments=[json.dumps({"script": spec})], model_name="scripted")


def in_flight(served: Served) -> float:
    assert served.metrics_port is not None
    text = scrape(served.metrics_port)
    return sample(text, "llm_proxy_in_flight_requests", method="stream", transport="grpc")


def honest_call(served: Served) -> grpc.StatusCode:
    with grpc.insecure_channel(served.address) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        try:
            reply = stub.Execute(
                pb.ExecuteRequest(user_fragments=["hi"], model_name="echo"), timeout=10
            )
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
    assert reply.HasField("success"), reply
    return grpc.StatusCode.OK


def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def request_lines(served: Served, outcome: str) -> list[str]:
    return [
        line
        for line in served.log.splitlines()
        if "llm_proxy.requests" in line and f"outcome={outcome}" in line
    ]


def test_stalled_streams_give_their_slots_back_while_their_client_stays(tmp_path: Path) -> None:
    with serve(
        config(
            max_concurrent_requests=4,
            max_concurrent_per_subject=4,
            client_read_timeout_seconds=1,
        ),
        tmp_path,
    ) as served:
        with StalledClient("127.0.0.1", served.port) as attacker:
            for _ in range(4):
                attacker.open(big_answer(200))
            assert eventually(lambda: in_flight(served) == 4, 10)
            # The server is full of streams nobody reads...
            assert honest_call(served) == grpc.StatusCode.RESOURCE_EXHAUSTED
            # ...until their read timeout, with the attacker still connected.
            assert eventually(lambda: in_flight(served) == 0, 15)
            assert honest_call(served) == grpc.StatusCode.OK
            assert eventually(lambda: len(request_lines(served, "CLIENT_TOO_SLOW")) == 4, 5)
        log = served.log
        assert " ERROR " not in log
        assert "Traceback" not in log


def test_the_request_timeout_counts_the_time_spent_on_a_slow_reader(tmp_path: Path) -> None:
    with serve(
        config(request_timeout_seconds=2, client_read_timeout_seconds=600), tmp_path
    ) as served:
        with StalledClient("127.0.0.1", served.port) as attacker:
            attacker.open(big_answer(200))
            assert eventually(lambda: in_flight(served) == 1, 10)
            opened = time.monotonic()
            assert eventually(lambda: in_flight(served) == 0, 15)
            # Well before the read timeout of ten minutes: the request timeout ended it.
            assert time.monotonic() - opened < 60
            assert eventually(lambda: len(request_lines(served, "CLIENT_TOO_SLOW")) == 1, 5)
        assert "Traceback" not in served.log


def test_a_stalled_reader_pauses_then_stops_the_model_and_bounds_memory(tmp_path: Path) -> None:
    streams = 40
    answer_kib = 1024
    probes = [tmp_path / f"probe-{index}" for index in range(streams)]
    with serve(
        config(client_read_timeout_seconds=2, request_timeout_seconds=60), tmp_path
    ) as served:
        assert honest_call(served) == grpc.StatusCode.OK
        rss_before = served.rss_kib()
        with StalledClient("127.0.0.1", served.port) as attacker:
            for probe in probes:
                attacker.open(big_answer(answer_kib, probe))
            assert eventually(lambda: in_flight(served) == streams, 20)
            time.sleep(1.0)
            grown_kib = served.rss_kib() - rss_before
            assert eventually(lambda: in_flight(served) == 0, 30)

            def stopped() -> bool:
                return all(p.exists() and p.read_text().endswith("closed\n") for p in probes)

            assert eventually(stopped, 10)
        produced = [probe.read_text().count("chunk ") for probe in probes]
        # Every model was paused once its unread answer filled the per-stream buffer (64 KiB),
        # and stopped when its stream was cancelled: none produced its whole 1 MiB answer.
        assert max(produced) < answer_kib // 4, produced
        # Unbounded, 40 unread answers of 1 MiB cost the server several hundred MiB.
        assert grown_kib < 60 * 1024, f"RSS grew by {grown_kib} KiB for {streams} streams"
        assert "Traceback" not in served.log
