"""Measure what authentication costs: the same load against `serve` with auth off and on.

    .venv/bin/python docs/measure_auth_overhead.py [--concurrency 16] [--seconds 8] [--rounds 3]

Starts real `serve` processes on loopback (auth off; auth on with the token cache; auth on
with the cache disabled), drives unary Execute calls on the `echo` model from one client
process with N calls in flight, and alternates the servers round by round so that background
noise hits every side alike. Prints requests/s and latency percentiles per side, and the cost of
auth relative to auth off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from adapters.auth import SigningKey, issue_token
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


@dataclass
class Side:
    name: str
    config: str
    token: str | None
    process: subprocess.Popen[str] | None = None
    port: int = 0
    rps: list[float] = field(default_factory=list)
    cpu_per_request_us: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def start(side: Side, directory: Path, env: dict[str, str]) -> None:
    config = directory / f"{side.name}.yaml"
    config.write_text(side.config)
    side.process = subprocess.Popen(  # noqa: S603  # our own interpreter and arguments
        [sys.executable, "-m", "infrastructure.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert side.process.stderr is not None
    for line in side.process.stderr:
        match = LISTENING.search(line)
        if match:
            side.port = int(match.group(1))
            break
    else:
        raise RuntimeError(f"{side.name} did not start")
    # Keep reading so a full pipe never blocks the server's logging.
    stream = side.process.stderr
    asyncio.get_event_loop().run_in_executor(None, lambda: [None for _ in stream])


async def drive(side: Side, concurrency: int, seconds: float, record: bool) -> None:
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{side.port}", options=(("grpc.use_local_subchannel_pool", 1),)
        )
        for _ in range(4)
    ]
    stubs = [pb_grpc.VibectlLLMProxyStub(channel) for channel in channels]
    metadata = (("authorization", f"Bearer {side.token}"),) if side.token else None
    request = pb.ExecuteRequest(user_fragments=["hello"], model_name="echo")
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def worker(index: int) -> None:
        stub = stubs[index % len(stubs)]
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await stub.Execute(request, metadata=metadata, timeout=30)
            if response.WhichOneof("result") != "success":
                raise RuntimeError(response.error.error_message)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    cpu_before = server_cpu_s(side)
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    cpu = server_cpu_s(side) - cpu_before
    for channel in channels:
        await channel.close(None)
    if record:
        side.rps.append(len(latencies) / elapsed)
        side.cpu_per_request_us.append(cpu / len(latencies) * 1e6)
        side.latencies.extend(latencies)


def server_cpu_s(side: Side) -> float:
    """User plus system CPU of the server process: unlike throughput, it barely moves when
    other work shares the machine."""
    assert side.process is not None
    fields = Path(f"/proc/{side.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    secret = secrets.token_urlsafe(48)
    token = issue_token(SigningKey.shared_secret(secret), subject="bench", expires_in_s=3600)
    base = "server:\n  port: 0\nlogging:\n  level: INFO\n"
    sides = [
        Side("auth-off", base + "auth:\n  enabled: false\n", None),
        Side("auth-on", base, token),
        Side("auth-on-no-cache", base + "auth:\n  cache_size: 0\n", token),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_PROXY_")}
    env["LLM_PROXY_AUTH__SECRET"] = secret
    with tempfile.TemporaryDirectory() as directory:
        env["XDG_CONFIG_HOME"] = directory
        for side in sides:
            start(side, Path(directory), env)
        try:
            for side in sides:
                await drive(side, args.concurrency, 2.0, record=False)  # warm-up
            for _ in range(args.rounds):
                for side in sides:
                    await drive(side, args.concurrency, args.seconds, record=True)
        finally:
            for side in sides:
                if side.process is not None:
                    side.process.terminate()
                    side.process.wait(timeout=15)
    baseline = statistics.median(sides[0].rps)
    print(f"unary Execute on echo, concurrency {args.concurrency}, {args.rounds} rounds")
    cpu_baseline = statistics.median(sides[0].cpu_per_request_us)
    print(
        f"{'side':<18}{'req/s (median)':>16}{'vs off':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU us/req':>19}{'vs off':>9}"
    )
    for side in sides:
        rps = statistics.median(side.rps)
        cpu = statistics.median(side.cpu_per_request_us)
        print(
            f"{side.name:<18}{rps:>16.0f}{(rps / baseline - 1) * 100:>8.1f}%"
            f"{percentile(side.latencies, 0.5) * 1000:>9.2f}"
            f"{percentile(side.latencies, 0.99) * 1000:>9.2f}"
            f"{cpu:>19.0f}{(cpu / cpu_baseline - 1) * 100:>8.1f}%"
        )
        print(f"{'':<18}rounds: " + " ".join(f"{r:.0f}" for r in side.rps))


if __name__ == "__main__":
    asyncio.run(main())
