"""Where the idle server's memory and start-up time go, import by import.

`python -m bench.footprint` imports the server's layers one after another in a fresh interpreter
and prints, as one JSON object, the RSS after each step. `importtime_top` runs the interpreter
with `-X importtime` and ranks the top-level imports by their cumulative time.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procinfo

ROOT = Path(__file__).resolve().parent.parent

# Each step adds to the previous ones, so its RSS delta is what it brings that nothing earlier did.
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("grpc", ("grpc", "grpc.aio")),
    ("protobuf + generated code", ("llm_proxy_client.generated.llm_proxy_pb2_grpc",)),
    ("llm", ("llm",)),
    ("llm plugins loaded", ()),
    ("proxy (cli, config, container, servicer)", ("infrastructure.cli",)),
)
PROXY_MODULES = ("infrastructure.cli", "infrastructure.container", "infrastructure.server_runner")


def _load_llm_plugins() -> None:
    import llm

    try:
        # As the server loads them: SDKs no served model uses stay deferred.
        from adapters.llm import deferred
    except ImportError:  # a checkout from before the deferral
        pass
    else:
        deferred.defer()
    llm.get_models()


def measure_steps() -> list[dict[str, Any]]:
    pid = os.getpid()
    rows: list[dict[str, Any]] = [{"step": "interpreter", "rss_kb": procinfo.rss_kb(pid)}]
    for name, modules in STEPS:
        started = time.perf_counter()
        for module in modules:
            importlib.import_module(module)
        if name == "llm plugins loaded":
            _load_llm_plugins()
        if name.startswith("proxy"):
            for module in PROXY_MODULES:
                try:
                    importlib.import_module(module)
                except ImportError as exc:
                    rows.append({"step": f"{module} failed", "error": str(exc)})
        rows.append(
            {
                "step": name,
                "rss_kb": procinfo.rss_kb(pid),
                "seconds": time.perf_counter() - started,
            }
        )
    previous = rows[0]["rss_kb"]
    for row in rows[1:]:
        if "rss_kb" in row:
            row["delta_kb"] = row["rss_kb"] - previous
            previous = row["rss_kb"]
    return rows


def run_steps() -> list[dict[str, Any]]:
    """measure_steps in a fresh interpreter, so nothing this process imported is counted."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.footprint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"footprint run failed: {completed.stderr.strip()[-500:]}")
    rows: list[dict[str, Any]] = json.loads(completed.stdout)
    return rows


def parse_importtime(stderr: str, top: int = 12) -> list[dict[str, Any]]:
    """Import time summed by top-level package, from `-X importtime` output.

    Summing each module's self time under its root package (grpc, llm, openai, pydantic...)
    says which dependency the start-up time goes to, however deeply it was imported.
    """
    totals: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        root = parts[2].strip().split(".")[0]
        totals[root] = totals.get(root, 0) + int(parts[0])
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return [{"package": name, "self_ms": micros / 1000} for name, micros in ranked[:top]]


def importtime_top(modules: Sequence[str] = PROXY_MODULES, top: int = 12) -> list[dict[str, Any]]:
    code = "; ".join(f"import {module}" for module in modules)
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return parse_importtime(completed.stderr, top)


# What any server of llm's models over gRPC must import and load: start-up is measured
# against it, in the same run.
IMPORT_FLOOR = "import grpc, llm; llm.get_models()"

# The proxy's own packages, relative to its checkout (the client is installed, so compiled).
PROXY_PACKAGES = ("domain", "application", "adapters", "infrastructure")


@dataclass(frozen=True)
class TreeMemory:
    """RSS/PSS/USS (KiB) of a supervisor and of each of its workers."""

    supervisor: dict[str, int]
    workers: tuple[dict[str, int], ...]

    def total(self, key: str) -> int:
        return self.supervisor.get(key, 0) + sum(worker.get(key, 0) for worker in self.workers)

    def mean_worker(self, key: str) -> float | None:
        values = [worker[key] for worker in self.workers if key in worker]
        return sum(values) / len(values) if values else None

    def max_worker(self, key: str) -> int | None:
        return max((worker[key] for worker in self.workers if key in worker), default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "supervisor": self.supervisor,
            "workers": list(self.workers),
            "total_pss_kb": self.total("pss"),
            "total_rss_kb": self.total("rss"),
        }


def tree_memory(pid: int) -> TreeMemory:
    children = [child for child in procinfo.descendants(pid) if child != pid]
    return TreeMemory(
        procinfo.memory_kb(pid), tuple(procinfo.memory_kb(child) for child in children)
    )


def per_added_worker(fewer: TreeMemory, more: TreeMemory) -> float | None:
    """PSS (KiB) each worker beyond the first few adds to the whole server: the difference of
    the totals over the difference of the worker counts. PSS totals add up to what the tree
    really uses, however its pages are shared."""
    extra = len(more.workers) - len(fewer.workers)
    if extra <= 0 or not fewer.supervisor or not more.supervisor:
        return None
    return (more.total("pss") - fewer.total("pss")) / extra


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def wait_for_lines(path: Path, text: str, count: int, *, after: int, timeout_s: float) -> None:
    """Until `text` occurs on `count` lines of the log at `path` past byte `after` (each
    worker logs its own "listening on" line; earlier runs may have written to the same log)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with path.open("rb") as log:
                log.seek(after)
                lines = log.read().decode(errors="replace").splitlines()
            found = sum(text in line for line in lines)
        except OSError:
            found = 0
        if found >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {found} of {count} lines with {text!r} in {path}")
        time.sleep(0.05)


if __name__ == "__main__":
    json.dump(measure_steps(), sys.stdout)
    sys.stdout.write("\n")
