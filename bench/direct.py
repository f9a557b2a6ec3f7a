"""The model called directly through `llm`, in-process, with no gRPC in between.

This separates what the model itself costs from what the proxy adds. It runs in its own process
(`python -m bench.direct ...`, one JSON object on stdout) so that llm's imports and plugin
loading never touch the orchestrating process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from bench.stats import LatencySummary


def _summary(latencies: list[float], ttfc: list[float], chunks: int, wall_s: float) -> Any:
    latency = LatencySummary.of(latencies)
    first = LatencySummary.of(ttfc)
    return {
        "requests": len(latencies),
        "duration_s": wall_s,
        "rps": len(latencies) / wall_s if wall_s > 0 else None,
        "latency": None if latency is None else asdict(latency),
        "ttfc": None if first is None else asdict(first),
        "chunks_per_stream": chunks / len(latencies) if latencies else None,
    }


def run_sync(model_id: str, prompt: str, stream: bool, count: int, duration_s: float) -> Any:
    import llm

    model = llm.get_model(model_id)
    latencies: list[float] = []
    ttfc: list[float] = []
    chunks = 0
    for _ in range(min(count, 50)):
        model.prompt(prompt, stream=stream).text()
    started = time.perf_counter()
    deadline = started + duration_s
    clock = time.perf_counter
    while len(latencies) < count and clock() < deadline:
        begin = clock()
        if stream:
            first: float | None = None
            for _chunk in model.prompt(prompt, stream=True):
                if first is None:
                    first = clock()
                chunks += 1
            if first is not None:
                ttfc.append(first - begin)
        else:
            model.prompt(prompt, stream=False).text()
        latencies.append(clock() - begin)
    return _summary(latencies, ttfc, chunks, clock() - started)


async def run_async(model_id: str, prompt: str, stream: bool, count: int, duration_s: float) -> Any:
    import llm

    model = llm.get_async_model(model_id)
    latencies: list[float] = []
    ttfc: list[float] = []
    chunks = 0
    for _ in range(min(count, 50)):
        await model.prompt(prompt, stream=stream).text()
    clock = time.perf_counter
    started = clock()
    deadline = started + duration_s
    while len(latencies) < count and clock() < deadline:
        begin = clock()
        if stream:
            first: float | None = None
            async for _chunk in model.prompt(prompt, stream=True):
                if first is None:
                    first = clock()
                chunks += 1
            if first is not None:
                ttfc.append(first - begin)
        else:
            await model.prompt(prompt, stream=False).text()
        latencies.append(clock() - begin)
    return _summary(latencies, ttfc, chunks, clock() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", default="hello")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--use-async", action="store_true")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)

    from bench import bench_models

    bench_models.ensure_registered()
    if args.use_async:
        result = asyncio.run(
            run_async(args.model, args.prompt, args.stream, args.count, args.duration)
        )
    else:
        result = run_sync(args.model, args.prompt, args.stream, args.count, args.duration)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
