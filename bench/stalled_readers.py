"""`python -m bench.stalled_readers`: what streams nobody reads cost the server.

Starts `serve` as a subprocess, opens N StreamExecute calls over raw HTTP/2 with a flow-control
window of 0 (tests/support/stalled_h2.py) asking for an answer of --answer-kb, and reports as
JSON: the server's RSS before, with the stalled streams open, and after; the admission slots
they hold; whether an honest caller is served meanwhile; and how long until the server has let
go of them (slots free, streams ended) with the stalled client still connected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc

from bench.procinfo import rss_kb
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.support.stalled_h2 import StalledClient
from tests.support.tokens import SECRET, claims, sign

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
METRICS = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")
IN_FLIGHT = re.compile(r'llm_proxy_in_flight_requests\{method="stream",transport="grpc"\} (\S+)')


def _answer_script(kb: int) -> str:
    return json.dumps({"script": {"chunks": ["x" * 1024], "repeat": kb}})


def _bearer(subject: str) -> tuple[str, str]:
    """Attacker and honest caller are different subjects, as they would be in real life."""
    return ("authorization", "Bearer " + sign(claims(subject), SECRET, kid="bench"))


def _in_flight(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        match = IN_FLIGHT.search(response.read().decode())
    return float(match.group(1)) if match else -1.0


async def _honest_call(port: int) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        try:
            reply = await stub.Execute(
                pb.ExecuteRequest(user_fragments=["hi"], model_name="echo"),
                timeout=5,
                metadata=(_bearer("honest"),),
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "ok" if reply.HasField("success") else reply.error.error_code


def measure(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "proxy.yaml"
        limits = [f"  request_timeout_seconds: {args.timeout}"]
        if args.max_concurrent:
            limits.append(f"  max_concurrent_requests: {args.max_concurrent}")
        if args.read_timeout is not None:
            limits.append(f"  client_read_timeout_seconds: {args.read_timeout}")
        config.write_text(
            "server:\n  port: 0\n  grace_period_seconds: 1\n"
            "models:\n  plugin_modules: [tests.support.scripted_models]\n"
            "auth:\n  enabled: true\n  keys: [{id: bench, secret: " + SECRET + "}]\n"
            "metrics:\n  enabled: true\n  port: 0\n"
            "logging:\n  level: INFO\n"
            "limits:\n" + "\n".join(limits) + "\n"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config)],
            cwd=ROOT,
            env={"XDG_CONFIG_HOME": tmp, "PATH": "/usr/bin:/bin", "LLM_USER_PATH": tmp},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        port = metrics_port = 0
        for line in process.stderr:
            if match := LISTENING.search(line):
                port = int(match.group(1))
            if match := METRICS.search(line):
                metrics_port = int(match.group(1))
            if port and metrics_port:
                break
        drain = threading.Thread(target=lambda: process.stderr and process.stderr.read())
        drain.daemon = True
        drain.start()
        try:
            return _run(args, process.pid, port, metrics_port)
        finally:
            process.kill()
            process.wait(10)


def _run(args: argparse.Namespace, pid: int, port: int, metrics_port: int) -> dict[str, object]:
    model = args.model
    message = pb.ExecuteRequest(user_fragments=[_answer_script(args.answer_kb)], model_name=model)
    # Warm up: one honest stream, so that first-use allocations do not count as the attack's.
    asyncio.run(_honest_call(port))
    time.sleep(0.5)
    rss_before = rss_kb(pid)
    attacker = (_bearer("attacker"),)
    clients = [
        StalledClient("127.0.0.1", port, attacker).connect() for _ in range(args.connections)
    ]
    opened_at = time.monotonic()
    for index in range(args.streams):
        clients[index % len(clients)].open(message)
    time.sleep(args.hold)
    rss_stalled = rss_kb(pid)
    held = _in_flight(metrics_port)
    honest = asyncio.run(_honest_call(port))
    # How long until the server has given up on the stalled streams, the client still there.
    released_after: float | None = None
    deadline = opened_at + args.wait
    while time.monotonic() < deadline:
        if _in_flight(metrics_port) == 0:
            released_after = round(time.monotonic() - opened_at, 2)
            break
        time.sleep(0.2)
    ended = sum(len(client.ended) for client in clients)
    statuses = sorted({status for client in clients for status in client.ended.values()})
    rss_released = rss_kb(pid)
    for client in clients:
        client.close()
    time.sleep(1.0)
    return {
        "streams": args.streams,
        "connections": args.connections,
        "answer_kb": args.answer_kb,
        "model": model,
        "max_concurrent_requests": args.max_concurrent,
        "request_timeout_s": args.timeout,
        "client_read_timeout_s": args.read_timeout,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_stalled_mib": round(rss_stalled / 1024, 1),
        "rss_per_stream_kib": round((rss_stalled - rss_before) / max(args.streams, 1), 1),
        "slots_held_while_stalled": held,
        "honest_caller_meanwhile": honest,
        "released_after_s": released_after,
        "streams_ended_by_server": ended,
        "end_statuses": statuses[:5],
        "rss_after_release_mib": round(rss_released / 1024, 1),
        "rss_after_disconnect_mib": round(rss_kb(pid) / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stalled_readers", description=__doc__)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--connections", type=int, default=5)
    parser.add_argument("--answer-kb", type=int, default=50)
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--max-concurrent", type=int, default=0, help="0: no limit")
    parser.add_argument("--timeout", type=float, default=10.0, help="request_timeout_seconds")
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=None,
        help="client_read_timeout_seconds (default: the server's)",
    )
    parser.add_argument("--hold", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for release")
    print(json.dumps(measure(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
