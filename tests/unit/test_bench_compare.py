"""Two bench runs side by side: shares of the floor come from within each run."""

from __future__ import annotations

import json
from pathlib import Path

from bench import compare
from bench.stats import LatencySummary, ScenarioResult


def result(name: str, target: str, rps: float, p50: float, cpu: float) -> ScenarioResult:
    return ScenarioResult(
        name=name,
        target=target,
        mode="unary",
        rps=rps,
        latency=LatencySummary(100, p50, p50, p50 * 2, p50 * 3, p50),
        server_cpu_s_per_req=cpu,
    )


def write(directory: Path, *results: ScenarioResult) -> Path:
    directory.mkdir()
    lines = [json.dumps(r.to_json()) for r in results]
    (directory / "results.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_each_run_is_measured_against_its_own_floor(tmp_path: Path) -> None:
    before = write(
        tmp_path / "before",
        result("floor-unary-c16", "floor", 8000, 1.0, 0.000100),
        result("proxy-unary-c16", "proxy", 4000, 2.0, 0.000300),
        ScenarioResult(name="startup", target="proxy", mode="startup", extra={"median_s": 0.9}),
    )
    # A busier machine: the floor is slower too, but the proxy's share of it grew.
    after = write(
        tmp_path / "after",
        result("floor-unary-c16", "floor", 6000, 1.2, 0.000110),
        result("proxy-unary-c16", "proxy", 4200, 1.5, 0.000200),
        ScenarioResult(name="startup", target="proxy", mode="startup", extra={"median_s": 0.6}),
    )

    table = {
        (row[0], row[1]): row[2:]
        for row in compare.rows(compare._load(before), compare._load(after))
    }

    assert table[("proxy-unary-c16", "share of floor")] == ["50%", "70%", "+20.0 pt (better)"]
    assert table[("proxy-unary-c16", "server CPU")] == [
        "300 µs/req",
        "200 µs/req",
        "-33.3% (better)",
    ]
    assert table[("proxy-unary-c16", "p50 over floor")] == ["1 ms", "0.3 ms", "-0.700 ms (better)"]
    assert table[("startup", "start-up (median)")] == ["0.9 s", "0.6 s", "-33.3% (better)"]
    # Floors are the measure, not rows of their own.
    assert not any(name.startswith("floor-") for name, _ in table)


def test_results_only_one_run_has_are_left_out(tmp_path: Path) -> None:
    before = write(tmp_path / "a", result("proxy-unary-c1", "proxy", 1000, 0.5, 0.0002))
    after = write(tmp_path / "b", result("proxy-stream-c1", "proxy", 900, 0.6, 0.0003))
    assert compare.main([str(before), str(after)]) == 1
