"""The benchmark's statistics, load summaries and parameter parsing: pure functions, no servers."""

from __future__ import annotations

import pytest

from bench import bench_models
from bench.footprint import parse_importtime
from bench.loadgen import WorkerResult, combine
from bench.scenarios import all_scenarios, select
from bench.session import QUICK, split, summarize_load
from bench.stats import LatencySummary, ScenarioResult, merge_counts, percentile


class TestPercentile:
    def test_interpolates_between_ranks(self) -> None:
        values = [1.0, 2.0, 3.0, 4.0]
        assert percentile(values, 50) == pytest.approx(2.5)
        assert percentile(values, 90) == pytest.approx(3.7)

    def test_ends_are_min_and_max(self) -> None:
        values = [3.0, 5.0, 11.0]
        assert percentile(values, 0) == 3.0
        assert percentile(values, 100) == 11.0

    def test_exact_rank_needs_no_interpolation(self) -> None:
        values = [float(v) for v in range(101)]
        assert percentile(values, 99) == 99.0
        assert percentile(values, 50) == 50.0

    def test_single_value(self) -> None:
        assert percentile([7.0], 99) == 7.0

    def test_empty_sample_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="empty"):
            percentile([], 50)

    @pytest.mark.parametrize("q", [-1.0, 100.5])
    def test_out_of_range_is_an_error(self, q: float) -> None:
        with pytest.raises(ValueError, match="outside"):
            percentile([1.0, 2.0], q)


class TestLatencySummary:
    def test_seconds_become_milliseconds_and_order_does_not_matter(self) -> None:
        summary = LatencySummary.of([0.003, 0.001, 0.002, 0.004])
        assert summary is not None
        assert summary.count == 4
        assert summary.p50_ms == pytest.approx(2.5)
        assert summary.max_ms == pytest.approx(4.0)
        assert summary.mean_ms == pytest.approx(2.5)
        assert summary.p99_ms == pytest.approx(3.97)

    def test_no_samples_gives_none(self) -> None:
        assert LatencySummary.of([]) is None


def test_merge_counts_adds_by_kind() -> None:
    merged = merge_counts([{"UNAVAILABLE": 2}, {"UNAVAILABLE": 1, "inband:X": 4}, {}])
    assert merged == {"UNAVAILABLE": 3, "inband:X": 4}


def test_scenario_result_survives_a_json_round_trip() -> None:
    original = ScenarioResult(
        name="proxy-unary-c1",
        target="proxy",
        mode="unary",
        concurrency=1,
        requests=10,
        errors={"UNAVAILABLE": 1},
        latency=LatencySummary.of([0.001, 0.002]),
        notes=["a note"],
        extra={"k": 1},
    )
    again = ScenarioResult.from_json(original.to_json())
    assert again == original
    assert again.error_count == 1


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [(16, 1, [16]), (16, 3, [6, 5, 5]), (1, 2, [1, 0]), (0, 2, [0, 0])],
)
def test_split_spreads_evenly_and_keeps_the_total(
    total: int, parts: int, expected: list[int]
) -> None:
    assert split(total, parts) == expected
    assert sum(split(total, parts)) == total


class TestSummarizeLoad:
    def runs(self) -> list[WorkerResult]:
        return [
            WorkerResult(
                ok=300, latencies=[0.001] * 300, errors={"UNAVAILABLE": 2}, wall_s=2.0, cpu_s=1.9
            ),
            WorkerResult(ok=100, latencies=[0.003] * 100, wall_s=1.0, cpu_s=0.2),
        ]

    def test_throughput_is_over_the_slowest_client(self) -> None:
        result = summarize_load(
            "x", "proxy", "unary", 16, self.runs(), rss_before=1, rss_after=2, server_cpu_s=0.8
        )
        assert result.requests == 400
        assert result.rps == pytest.approx(200.0)
        assert result.errors == {"UNAVAILABLE": 2}
        assert result.server_cpu_s_per_req == pytest.approx(0.002)
        assert result.latency is not None
        assert result.latency.p50_ms == pytest.approx(1.0)
        assert result.ttfc is None

    def test_a_saturated_client_is_reported(self) -> None:
        result = summarize_load(
            "x", "proxy", "unary", 16, self.runs(), rss_before=1, rss_after=2, server_cpu_s=0.1
        )
        assert result.client_bound is True
        assert result.client_cpu_util == pytest.approx(0.95)
        assert any("client" in note for note in result.notes)

    def test_background_load_is_reported(self) -> None:
        result = summarize_load(
            "x",
            "proxy",
            "unary",
            16,
            self.runs(),
            rss_before=1,
            rss_after=2,
            server_cpu_s=0.1,
            machine_busy_s=4.2,
        )
        # 4.2 busy - 0.1 server - 2.1 clients = 2.0 core-seconds over 2 s of wall time.
        assert result.extra["other_cpu_util"] == pytest.approx(1.0)
        assert any("other processes" in note for note in result.notes)


class TestBenchModelParameters:
    def test_chunks_and_hold_come_from_the_prompt(self) -> None:
        assert bench_models.chunk_count("please chunks=7 now") == 7
        assert bench_models.hold_seconds("hold=2.5") == 2.5

    def test_defaults_when_absent_or_garbled(self) -> None:
        assert bench_models.chunk_count("hello") == bench_models.DEFAULT_CHUNKS
        assert bench_models.chunk_count("chunks=many") == bench_models.DEFAULT_CHUNKS
        assert bench_models.hold_seconds("hold=") == bench_models.DEFAULT_HOLD_S

    def test_values_are_clamped(self) -> None:
        assert bench_models.chunk_count("chunks=0") == 1
        assert bench_models.chunk_count("chunks=999999999") == bench_models.MAX_CHUNKS
        assert bench_models.hold_seconds("hold=-3") == 0.0
        assert bench_models.hold_seconds("hold=1e9") == bench_models.MAX_HOLD_S


def test_importtime_is_summed_by_top_level_package() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |     grpc._cython",
            "import time:        50 |        150 |   grpc",
            "import time:      2000 |       2000 |     llm.models",
            "import time:       500 |       2650 | llm",
            "not an import line",
        ]
    )
    ranked = parse_importtime(stderr)
    assert ranked == [
        {"package": "llm", "self_ms": 2.5},
        {"package": "grpc", "self_ms": 0.15},
    ]


def test_combining_rounds_adds_counts_and_keeps_every_sample() -> None:
    first = WorkerResult(ok=2, latencies=[0.1, 0.2], errors={"A": 1}, wall_s=1.0, cpu_s=0.5)
    second = WorkerResult(ok=1, latencies=[0.3], errors={"A": 2, "B": 1}, wall_s=2.0, cpu_s=1.0)
    both = combine(first, second)
    assert both.ok == 3
    assert both.latencies == [0.1, 0.2, 0.3]
    assert both.errors == {"A": 3, "B": 1}
    assert both.wall_s == 3.0
    assert both.cpu_s == 1.5


class TestSelect:
    def chosen(self, only: list[str], skip: list[str]) -> dict[str, list[str]]:
        picked = select(all_scenarios(QUICK), only, skip)
        return {
            scenario.name: [member for member in scenario.members if wanted(member)]
            for scenario, wanted in picked
        }

    def test_everything_by_default(self) -> None:
        picked = self.chosen([], [])
        assert picked["unary-c16"] == ["floor-unary-c16", "llm-floor-unary-c16", "proxy-unary-c16"]
        # A load without a model (GetServerInfo) has no llm floor.
        assert picked["info-c16"] == ["floor-info-c16", "proxy-info-c16"]
        assert "soak" in picked

    def test_a_scenario_name_selects_all_its_members(self) -> None:
        assert self.chosen(["unary-c16"], []) == {
            "unary-c16": ["floor-unary-c16", "llm-floor-unary-c16", "proxy-unary-c16"]
        }

    def test_a_member_pattern_selects_that_member_alone(self) -> None:
        picked = self.chosen(["proxy-unary-*"], [])
        assert picked == {
            "unary-c1": ["proxy-unary-c1"],
            "unary-c16": ["proxy-unary-c16"],
            "unary-c64": ["proxy-unary-c64"],
        }

    def test_skip_wins_over_only(self) -> None:
        picked = self.chosen(["unary-*"], ["*floor-*", "unary-c64"])
        assert picked == {"unary-c1": ["proxy-unary-c1"], "unary-c16": ["proxy-unary-c16"]}
