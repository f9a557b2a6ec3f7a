"""`python -m bench.compare BEFORE AFTER`: two bench runs side by side, figure by figure.

Each run is a results directory (or its results.jsonl) of `python -m bench`; typically BEFORE ran
with `--proxy-root` pointing at a worktree of the earlier commit, AFTER from this checkout, one
after the other on the same machine. Shares of the floor come from within each run (the floor
ran in alternating rounds with that run's proxy), so they compare across runs better than raw
throughput does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import read_jsonl
from bench.stats import ScenarioResult


@dataclass(frozen=True)
class Figure:
    """One row: how to read a number off a run, and which way is better."""

    label: str
    read: Callable[[dict[str, ScenarioResult], ScenarioResult], float | None]
    unit: str
    higher_is_better: bool
    # Shown as a difference (points, or the unit) rather than a percentage: a share, or a
    # figure that is itself a difference against the floor.
    difference: bool = False


def _floor_of(run: dict[str, ScenarioResult], result: ScenarioResult) -> ScenarioResult | None:
    if not result.name.startswith("proxy-"):
        return None
    return run.get("floor-" + result.name.removeprefix("proxy-"))


def _share(run: dict[str, ScenarioResult], result: ScenarioResult) -> float | None:
    floor = _floor_of(run, result)
    if floor is None or not floor.rps or result.rps is None:
        return None
    return 100 * result.rps / floor.rps


def _p50_added(run: dict[str, ScenarioResult], result: ScenarioResult) -> float | None:
    floor = _floor_of(run, result)
    if floor is None or floor.latency is None or result.latency is None:
        return None
    return result.latency.p50_ms - floor.latency.p50_ms


def _extra(
    key: str, scale: float = 1.0
) -> Callable[[dict[str, ScenarioResult], ScenarioResult], float | None]:
    def read(_run: dict[str, ScenarioResult], result: ScenarioResult) -> float | None:
        value = result.extra.get(key)
        return float(value) * scale if isinstance(value, int | float) else None

    return read


FIGURES = (
    Figure("req/s", lambda _, r: r.rps, "", True),
    Figure("share of floor", _share, "%", True, difference=True),
    Figure("p50", lambda _, r: r.latency.p50_ms if r.latency else None, " ms", False),
    Figure("p50 over floor", _p50_added, " ms", False, difference=True),
    Figure("p99", lambda _, r: r.latency.p99_ms if r.latency else None, " ms", False),
    Figure(
        "server CPU",
        lambda _, r: r.server_cpu_s_per_req * 1e6 if r.server_cpu_s_per_req else None,
        " µs/req",
        False,
    ),
    Figure("start-up (median)", _extra("median_s"), " s", False),
    Figure("import floor (median)", _extra("floor_median_s"), " s", False),
    Figure("start-up over floor", _extra("over_floor_s"), " s", False, difference=True),
    Figure("start-up CPU", _extra("cpu_median_s"), " s", False),
    Figure("start-up CPU over floor", _extra("cpu_over_floor_s"), " s", False, difference=True),
    Figure("idle RSS", _extra("idle_rss_kb", 1 / 1024), " MiB", False),
    Figure("idle PSS", _extra("pss_kb", 1 / 1024), " MiB", False),
    Figure("idle USS", _extra("uss_kb", 1 / 1024), " MiB", False),
    Figure("PSS per added worker", _extra("pss_per_added_worker_kb", 1 / 1024), " MiB", False),
    Figure("worker PSS (4 workers)", _extra("worker_pss_kb", 1 / 1024), " MiB", False),
    Figure("worker USS (4 workers)", _extra("worker_uss_kb", 1 / 1024), " MiB", False),
    Figure("RSS after load", _extra("rss_after_load_kb", 1 / 1024), " MiB", False),
    Figure("USS after load", _extra("uss_after_load_kb", 1 / 1024), " MiB", False),
    Figure(
        "PSS per added worker after load",
        _extra("pss_per_added_worker_after_load_kb", 1 / 1024),
        " MiB",
        False,
    ),
    Figure(
        "busiest worker USS after load (4 workers)",
        _extra("worker_uss_after_load_kb", 1 / 1024),
        " MiB",
        False,
    ),
)


def _load(path: Path) -> dict[str, ScenarioResult]:
    jsonl = path / "results.jsonl" if path.is_dir() else path
    return {
        result.name: result
        for result in read_jsonl(jsonl)
        if not result.skipped and result.mode != "failed"
    }


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def rows(before: dict[str, ScenarioResult], after: dict[str, ScenarioResult]) -> list[list[str]]:
    """result, figure, before, after, change — for every figure both runs have."""
    table: list[list[str]] = []
    for name, old in before.items():
        new = after.get(name)
        if new is None or old.target in ("floor", "llm-floor"):
            continue
        for figure in FIGURES:
            a, b = figure.read(before, old), figure.read(after, new)
            if a is None or b is None:
                continue
            if figure.difference:
                change = f"{b - a:+.1f} pt" if figure.unit == "%" else f"{b - a:+.3f}{figure.unit}"
            elif a:
                change = f"{100 * (b - a) / a:+.1f}%"
            else:
                change = "n/a"
            better = (b > a) == figure.higher_is_better
            mark = "" if a == b else (" (better)" if better else " (worse)")
            table.append(
                [
                    name,
                    figure.label,
                    _number(a) + figure.unit,
                    _number(b) + figure.unit,
                    change + mark,
                ]
            )
    return table


def markdown(table: Sequence[Sequence[str]], labels: tuple[str, str]) -> str:
    header = ["result", "figure", labels[0], labels[1], "change"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--labels", nargs=2, default=("before", "after"))
    args = parser.parse_args(argv)
    table = rows(_load(args.before), _load(args.after))
    if not table:
        print("the two runs have no result in common", file=sys.stderr)
        return 1
    sys.stdout.write(markdown(table, (args.labels[0], args.labels[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
