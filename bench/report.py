"""The report: targets checked against the results, a Markdown table and a PNG plot."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.footprint import IMPORT_FLOOR
from bench.stats import ScenarioResult

MIB_KB = 1024
# RSS wanders by a few MiB with allocator and GC timing; growth below this is not a leak.
GROWTH_TOLERANCE_KB = 5 * MIB_KB


@dataclass(frozen=True, slots=True)
class TargetCheck:
    name: str
    goal: str
    measured: str
    met: bool | None  # None: the scenarios it needs did not run
    detail: str = ""


def by_name(results: Iterable[ScenarioResult]) -> dict[str, ScenarioResult]:
    """The results that measured something, by scenario name."""
    return {
        result.name: result
        for result in results
        if result.skipped is None and result.mode != "failed"
    }


Found = dict[str, ScenarioResult]


def _missing(name: str, goal: str, *needed: str) -> TargetCheck:
    return TargetCheck(name, goal, "not measured", None, "needs " + ", ".join(needed))


@dataclass(frozen=True, slots=True)
class Measured:
    value: float
    limit: float
    text: str


@dataclass(frozen=True, slots=True)
class Bound:
    """A target met while a measured value stays on the right side of a limit."""

    name: str
    goal: str
    needs: tuple[str, ...]
    # None when a scenario it needs did not run or did not measure what is wanted.
    measure: Callable[[Found], Measured | None]
    # How the margin is written: "{:+.0%}", "{:+.3f} ms"...
    margin: str
    at_least: bool = False
    against: str = "target"

    def __call__(self, found: Found) -> TargetCheck:
        measured = self.measure(found)
        if measured is None:
            return _missing(self.name, self.goal, *self.needs)
        value, limit = measured.value, measured.limit
        return TargetCheck(
            self.name,
            self.goal,
            measured.text,
            value >= limit if self.at_least else value <= limit,
            f"{self.margin.format(value - limit)} against the {self.against}",
        )


def _rps(found: Found, name: str) -> float | None:
    result = found.get(name)
    return result.rps if result is not None and result.rps else None


def _llm_floor_note(found: Found, load: str) -> str:
    """What the floor answering through llm alone keeps of the floor: as far as any proxy
    that calls llm could get."""
    llm_floor, floor = _rps(found, f"llm-floor-{load}"), _rps(found, f"floor-{load}")
    if llm_floor is None or floor is None:
        return ""
    return f"; the llm floor alone keeps {llm_floor / floor:.0%}"


def _share(load: str, limit: float) -> Callable[[Found], Measured | None]:
    def measure(found: Found) -> Measured | None:
        proxy, floor = _rps(found, f"proxy-{load}"), _rps(found, f"floor-{load}")
        if proxy is None or floor is None:
            return None
        share = proxy / floor
        text = f"{proxy:,.0f} vs {floor:,.0f} req/s = {share:.0%}" + _llm_floor_note(found, load)
        return Measured(share, limit, text)

    return measure


def _floor_p50(found: Found, side: str = "floor") -> float | None:
    floor = found.get(f"{side}-unary-c1")
    return floor.latency.p50_ms if floor is not None and floor.latency else None


def _unary_p50(found: Found) -> Measured | None:
    proxy, floor = found.get("proxy-unary-c1"), _floor_p50(found)
    if proxy is None or not proxy.latency or floor is None:
        return None
    value = proxy.latency.p50_ms
    text = f"{value:.3f} ms vs floor {floor:.3f} ms (+{value - floor:.3f} ms)"
    llm_floor = _floor_p50(found, "llm-floor")
    if llm_floor is not None:
        text += f"; the llm floor alone: +{llm_floor - floor:.3f} ms"
    return Measured(value, floor + 0.12, text)


def _first_chunk_p50(found: Found) -> Measured | None:
    stream, floor = found.get("proxy-stream-c1"), _floor_p50(found)
    if stream is None or not stream.ttfc or floor is None:
        return None
    value = stream.ttfc.p50_ms
    text = f"{value:.3f} ms vs floor unary p50 {floor:.3f} ms"
    llm_floor = found.get("llm-floor-stream-c1")
    if llm_floor is not None and llm_floor.ttfc:
        text += f"; the llm floor's: {llm_floor.ttfc.p50_ms:.3f} ms"
    return Measured(value, floor + 0.2, text)


def _auth_cost(found: Found) -> Measured | None:
    # The auth-off run right before the auth-on one saw the same background load.
    baseline = "auth-off-unary-c16" if "auth-off-unary-c16" in found else "proxy-unary-c16"
    on, off = _rps(found, "auth-on-unary-c16"), _rps(found, baseline)
    if on is None or off is None:
        return None
    cost = 1 - on / off
    return Measured(cost, 0.10, f"{on:,.0f} with vs {off:,.0f} req/s without = {cost:.1%} slower")


def _startup(found: Found) -> Measured | None:
    startup = found.get("startup")
    if startup is None or startup.duration_s is None:
        return None
    seconds = startup.duration_s
    return Measured(seconds, 0.8, f"{seconds:.3f} s median of {startup.requests}")


def _idle_rss(found: Found) -> Measured | None:
    idle = found.get("idle-rss")
    if idle is None or not idle.server_rss_before_kb:
        return None
    mib = idle.server_rss_before_kb / MIB_KB
    return Measured(mib, 75, f"{mib:.1f} MiB")


def _open_streams(found: Found) -> TargetCheck:
    name, goal = "open streams", "10,000 open streams, none dropped"
    streams = sorted(
        (result for result in found.values() if result.mode == "open-streams"),
        key=_ramped_last,
    )
    if not streams:
        return _missing(name, goal, "open-streams-10000")
    largest = streams[-1]
    bursts = [
        result
        for result in streams[:-1]
        if result.extra.get("streams") == largest.extra.get("streams")
    ]
    count = int(largest.extra.get("streams", 0))
    dropped = int(largest.extra.get("dropped", count))
    met: bool | None = dropped == 0 and largest.error_count == 0
    note = ""
    if count < 10_000:
        met = None if met else False
        note = f"only {count:,} streams were run (quick mode)"
    detail = note or (f"{dropped:,} dropped" if dropped else "none dropped")
    for burst in bursts:
        lost = int(burst.extra.get("dropped", 0))
        detail += f"; opened in one burst instead, {lost:,} dropped"
    measured = (
        f"{count - dropped:,} of {count:,} completed, "
        f"{largest.extra.get('kb_per_stream') or 0:.1f} KiB per open stream"
    )
    return TargetCheck(name, goal, measured, met, detail)


def _memory_growth(found: Found) -> TargetCheck:
    name, goal = "memory growth", "no RSS growth over 200,000 requests after warm-up"
    soak = found.get("soak")
    if soak is None or soak.server_rss_before_kb is None or soak.server_rss_after_kb is None:
        return _missing(name, goal, "soak")
    growth = soak.server_rss_after_kb - soak.server_rss_before_kb
    met: bool | None = growth <= GROWTH_TOLERANCE_KB
    detail = f"tolerance {GROWTH_TOLERANCE_KB / MIB_KB:.0f} MiB"
    if soak.requests < 200_000:
        detail += f"; only {soak.requests:,} requests were run"
        if met:
            met = None
    measured = f"{growth / MIB_KB:+.1f} MiB over {soak.requests:,} requests"
    return TargetCheck(name, goal, measured, met, detail)


def _idle_default(found: Found) -> Measured | None:
    idle = found.get("idle-default")
    if idle is None or not idle.extra.get("rss_kb"):
        return None
    rss = idle.extra["rss_kb"] / MIB_KB
    text = (
        f"{rss:.1f} MiB (PSS {_mib(idle.extra.get('pss_kb'))}, "
        f"USS {_mib(idle.extra.get('uss_kb'))})"
    )
    return Measured(rss, 90, text)


def _added_worker(found: Found) -> Measured | None:
    workers = found.get("workers-memory")
    if workers is None or workers.extra.get("pss_per_added_worker_kb") is None:
        return None
    added = workers.extra["pss_per_added_worker_kb"] / MIB_KB
    text = (
        f"{added:.1f} MiB PSS (a worker's own, USS: {_mib(workers.extra.get('worker_uss_kb'))} MiB)"
    )
    return Measured(added, 40, text)


def _startup_over_floor(found: Found) -> Measured | None:
    startup = found.get("startup-default")
    if startup is None or startup.extra.get("over_floor_s") is None:
        return None
    over = startup.extra["over_floor_s"]
    text = (
        f"{startup.extra['median_s']:.3f} s vs floor "
        f"{startup.extra['floor_median_s']:.3f} s ({over:+.3f} s; CPU "
        f"{startup.extra.get('cpu_over_floor_s', 0):+.3f} s)"
    )
    return Measured(over, 0.15, text)


def _governance_cost(on: str, off: str, limit: float) -> Callable[[Found], Measured | None]:
    """What turning a governance feature on costs: server CPU per request against the run
    without it (alternating rounds, so both saw the same load); req/s alongside."""

    def measure(found: Found) -> Measured | None:
        with_it, without = found.get(on), found.get(off)
        if with_it is None or without is None:
            return None
        cpu_on, cpu_off = with_it.server_cpu_s_per_req, without.server_cpu_s_per_req
        if not cpu_on or not cpu_off:
            return None
        cost = cpu_on / cpu_off - 1
        text = f"{cpu_on * 1e6:,.0f} vs {cpu_off * 1e6:,.0f} µs server CPU/request = {cost:+.1%}"
        store = with_it.extra.get("store_cpu_s_per_req")
        if store:
            text += f" (and redis-server {store * 1e6:,.0f} µs/request)"
        if with_it.rps and without.rps:
            text += f"; {with_it.rps:,.0f} vs {without.rps:,.0f} req/s"
        return Measured(cost, limit, text)

    return measure


# The targets, in the order the report lists them.
TARGETS: tuple[Callable[[Found], TargetCheck], ...] = (
    # Issue 14's throughput and latency targets.
    Bound(
        "unary throughput c=16",
        "≥ 65% of the floor's req/s",
        ("proxy-unary-c16", "floor-unary-c16"),
        _share("unary-c16", 0.65),
        "{:+.0%}",
        at_least=True,
    ),
    Bound(
        "stream throughput c=16",
        "≥ 75% of the floor's req/s",
        ("proxy-stream-c16", "floor-stream-c16"),
        _share("stream-c16", 0.75),
        "{:+.0%}",
        at_least=True,
    ),
    Bound(
        "unary p50 c=1",
        "≤ floor p50 + 0.12 ms",
        ("proxy-unary-c1", "floor-unary-c1"),
        _unary_p50,
        "{:+.3f} ms",
        against="limit",
    ),
    Bound(
        "time to first chunk p50 c=1",
        "≤ floor unary p50 + 0.2 ms",
        ("proxy-stream-c1", "floor-unary-c1"),
        _first_chunk_p50,
        "{:+.3f} ms",
        against="limit",
    ),
    Bound(
        "auth cost c=16",
        "auth on costs ≤ 10% of req/s",
        ("auth-on-unary-c16", "auth-off-unary-c16 or proxy-unary-c16"),
        _auth_cost,
        "{:+.1%}",
    ),
    Bound("start-up", "≤ 0.8 s to the first GetServerInfo", ("startup",), _startup, "{:+.3f} s"),
    Bound("idle RSS", "≤ 75 MiB", ("idle-rss",), _idle_rss, "{:+.1f} MiB"),
    _open_streams,
    _memory_growth,
    # Issue 13's costs of sharing safely, each against its own "off" run.
    Bound(
        "in-memory limits cost c=16",
        "≤ 5% server CPU per request",
        ("limits-memory-unary-c16", "limits-off-unary-c16"),
        _governance_cost("limits-memory-unary-c16", "limits-off-unary-c16", 0.05),
        "{:+.1%}",
    ),
    Bound(
        "Redis limits cost c=16",
        "≤ 15% server CPU per request",
        ("limits-redis-unary-c16", "limits-off-unary-c16"),
        _governance_cost("limits-redis-unary-c16", "limits-off-unary-c16", 0.15),
        "{:+.1%}",
    ),
    Bound(
        "SQLite ledger cost c=16",
        "≤ 5% server CPU per request",
        ("ledger-sqlite-unary-c16", "ledger-off-unary-c16"),
        _governance_cost("ledger-sqlite-unary-c16", "ledger-off-unary-c16", 0.05),
        "{:+.1%}",
    ),
    # Issue 14's memory and start-up figures, all with the default configuration.
    Bound(
        "idle RSS, default configuration",
        "≤ 90 MiB",
        ("idle-default",),
        _idle_default,
        "{:+.1f} MiB",
    ),
    Bound(
        "memory per added worker",
        "≤ 40 MiB PSS",
        ("workers-memory",),
        _added_worker,
        "{:+.1f} MiB",
    ),
    Bound(
        "start-up to the first call",
        "≤ import floor + 0.15 s",
        ("startup-default",),
        _startup_over_floor,
        "{:+.3f} s",
        against="limit",
    ),
)


def check_targets(results: Sequence[ScenarioResult]) -> list[TargetCheck]:
    found = by_name(results)
    return [target(found) for target in TARGETS]


def _ramped_last(result: ScenarioResult) -> tuple[int, int]:
    """Order by stream count, a run opened in batches after the burst of the same size."""
    count = int(result.extra.get("streams", 0))
    batch = int(result.extra.get("batch", count))
    return count, 1 if batch < count else 0


# --- Markdown -----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _mib(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / MIB_KB:.1f}"


def _errors(result: ScenarioResult) -> str:
    if not result.errors:
        return "0"
    return ", ".join(f"{kind}: {count}" for kind, count in result.errors.items())


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


LOAD_MODES = ("unary", "stream", "info")


def load_rows(results: Sequence[ScenarioResult]) -> list[list[str]]:
    rows = []
    for result in results:
        if result.mode not in LOAD_MODES:
            continue
        if result.skipped:
            rows.append([result.name, "skipped: " + result.skipped] + [""] * 11)
            continue
        latency, ttfc = result.latency, result.ttfc
        cpu = result.server_cpu_s_per_req
        rows.append(
            [
                result.name,
                str(result.concurrency or "-"),
                _num(result.rps, 0),
                _num(latency.p50_ms if latency else None, 3),
                _num(latency.p90_ms if latency else None, 3),
                _num(latency.p99_ms if latency else None, 3),
                _num(latency.max_ms if latency else None, 2),
                _num(ttfc.p50_ms if ttfc else None, 3),
                _num(ttfc.p99_ms if ttfc else None, 3),
                _errors(result),
                _num(cpu * 1e6 if cpu is not None else None, 0),
                f"{_mib(result.server_rss_before_kb)} → {_mib(result.server_rss_after_kb)}"
                if result.target != "direct"
                else "-",
                _num(result.client_cpu_util, 2) + (" (bound)" if result.client_bound else ""),
            ]
        )
    return rows


def overhead_rows(results: Sequence[ScenarioResult]) -> list[list[str]]:
    """Each proxy load against its floor and, where one ran, its llm floor: the share of
    their throughput it keeps, the median latency and server CPU per request it adds."""
    found = by_name(results)
    rows = []
    for name, proxy in found.items():
        if not name.startswith("proxy-") or proxy.mode not in LOAD_MODES:
            continue
        load = name.removeprefix("proxy-")
        floor = found.get(f"floor-{load}")
        if floor is None or not floor.rps or not proxy.rps:
            continue
        llm_floor = found.get(f"llm-floor-{load}")
        if llm_floor is not None and not llm_floor.rps:
            llm_floor = None
        rows.append(
            [
                load.rsplit("-c", 1)[0],
                str(proxy.concurrency),
                f"{proxy.rps / floor.rps:.0%}",
                _num(_p50_added(proxy, floor), 3),
                _num(_p99_added(proxy, floor), 3),
                _num(_cpu_added(proxy, floor), 0),
                f"{llm_floor.rps / floor.rps:.0%}" if llm_floor and llm_floor.rps else "-",
                f"{proxy.rps / llm_floor.rps:.0%}" if llm_floor and llm_floor.rps else "-",
                _num(_p50_added(proxy, llm_floor), 3),
                _num(_cpu_added(proxy, llm_floor), 0),
            ]
        )
    return rows


def _p50_added(proxy: ScenarioResult, base: ScenarioResult | None) -> float | None:
    if base is None or not proxy.latency or not base.latency:
        return None
    return proxy.latency.p50_ms - base.latency.p50_ms


def _p99_added(proxy: ScenarioResult, base: ScenarioResult | None) -> float | None:
    if base is None or not proxy.latency or not base.latency:
        return None
    return proxy.latency.p99_ms - base.latency.p99_ms


def _cpu_added(proxy: ScenarioResult, base: ScenarioResult | None) -> float | None:
    if base is None or proxy.server_cpu_s_per_req is None or base.server_cpu_s_per_req is None:
        return None
    return (proxy.server_cpu_s_per_req - base.server_cpu_s_per_req) * 1e6


def markdown(results: Sequence[ScenarioResult], meta: dict[str, Any]) -> str:
    lines = [f"# llm-proxy benchmark ({meta.get('profile', '?')})", ""]
    for key, value in meta.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Targets", ""]
    lines += _table(
        ["target", "goal", "measured", "verdict", "detail"],
        (
            [check.name, check.goal, check.measured, _verdict(check.met), check.detail]
            for check in check_targets(results)
        ),
    )
    lines += ["", "## Request load", ""]
    lines += [
        "Latency in ms; TTFC is the time to the first text chunk; server CPU in µs per request; "
        "server RSS in MiB before → after the measured phase; client util is the busiest "
        "client process's share of a core.",
        "",
    ]
    lines += _table(
        [
            "scenario",
            "c",
            "req/s",
            "p50",
            "p90",
            "p99",
            "max",
            "TTFC p50",
            "TTFC p99",
            "errors",
            "srv CPU µs/req",
            "srv RSS MiB",
            "client util",
        ],
        load_rows(results),
    )
    overhead = overhead_rows(results)
    if overhead:
        lines += ["", "## Proxy against floor", ""]
        lines += [
            "What the proxy adds to the same call on the no-op grpc.aio server, run back to back "
            "with it: the share of the floor's throughput it keeps, the latency it adds at the "
            "median, and the server CPU it adds per request. The llm floor is that server "
            "answering through one call of llm on the same model and nothing else: its share "
            "is as far as any proxy that calls llm can get, and what the proxy adds over it is "
            "the proxy's own cost.",
            "",
        ]
        lines += _table(
            [
                "load",
                "c",
                "req/s share",
                "p50 added ms",
                "p99 added ms",
                "CPU added µs/req",
                "llm floor's share",
                "share of llm floor",
                "p50 over llm floor ms",
                "CPU over llm floor µs/req",
            ],
            overhead,
        )
    lines += _other_sections(results)
    notes = [(result.name, note) for result in results for note in result.notes]
    skipped = [(result.name, result.skipped) for result in results if result.skipped]
    if notes or skipped:
        lines += ["", "## Notes", ""]
        lines += [f"- {name}: skipped, {why}" for name, why in skipped]
        lines += [f"- {name}: {note}" for name, note in notes]
    return "\n".join(lines) + "\n"


def _other_sections(results: Sequence[ScenarioResult]) -> list[str]:
    lines: list[str] = []
    streams = [r for r in results if r.mode == "open-streams" and not r.skipped]
    if streams:
        lines += ["", "## Open streams", ""]
        lines += _table(
            [
                "streams",
                "opened per batch",
                "completed",
                "peak open",
                "all open after s",
                "errors",
                "srv RSS idle → all open → after, MiB",
                "KiB/stream",
                "client RSS MiB",
            ],
            (
                [
                    f"{r.extra.get('streams', 0):,}",
                    f"{r.extra.get('batch', 0):,}",
                    f"{r.requests:,}",
                    f"{r.extra.get('peak_open', 0):,}",
                    _num(r.extra.get("all_open_after_s"), 2),
                    _errors(r),
                    f"{_mib(r.server_rss_before_kb)} → "
                    f"{_mib(r.extra.get('server_rss_all_open_kb'))} → "
                    f"{_mib(r.server_rss_after_kb)}",
                    _num(r.extra.get("kb_per_stream"), 1),
                    _mib(r.extra.get("client_rss_kb")),
                ]
                for r in streams
            ),
        )
    found = by_name(results)
    startup = found.get("startup")
    if startup:
        runs = ", ".join(f"{value:.3f}" for value in startup.extra.get("runs_s", []))
        lines += [
            "",
            "## Start-up",
            "",
            f"Seconds from exec to the first successful GetServerInfo: median "
            f"{_num(startup.duration_s, 3)} (runs: {runs}); the floor server: "
            f"{_num(startup.extra.get('floor_s'), 3)}.",
        ]
    idle = found.get("idle-rss")
    if idle:
        lines += [
            "",
            "## Idle memory",
            "",
            f"Proxy idle RSS {_mib(idle.server_rss_before_kb)} MiB, after its first requests "
            f"{_mib(idle.server_rss_after_kb)} MiB; the floor server idles at "
            f"{_mib(idle.extra.get('floor_idle_rss_kb'))} MiB.",
            "",
            "RSS of a fresh interpreter as the server's layers are imported one after another:",
            "",
        ]
        lines += _table(
            ["step", "RSS MiB", "adds MiB", "seconds"],
            (
                [
                    str(step.get("step")),
                    _mib(step.get("rss_kb")),
                    _mib(step.get("delta_kb")),
                    _num(step.get("seconds"), 3),
                ]
                for step in idle.extra.get("import_steps", [])
            ),
        )
        by_package = idle.extra.get("import_time_by_package", [])
        if by_package:
            lines += ["", "Import time of the server's modules by top-level package:", ""]
            lines += _table(
                ["package", "ms"],
                ([str(row["package"]), _num(row["self_ms"], 1)] for row in by_package),
            )
    lines += _footprint_section(found)
    soak = found.get("soak")
    if soak:
        samples = ", ".join(_mib(value) for value in soak.extra.get("rss_samples_kb", []))
        lines += [
            "",
            "## Soak",
            "",
            f"{soak.requests:,} requests (unary and stream alternating, c=16) at "
            f"{_num(soak.rps, 0)} req/s after {soak.extra.get('warmup_requests', 0):,} of "
            f"warm-up; server RSS {_mib(soak.server_rss_before_kb)} → "
            f"{_mib(soak.server_rss_after_kb)} MiB; errors: {_errors(soak)}.",
            "",
            f"RSS samples, MiB: {samples}",
        ]
    return lines


def _footprint_section(found: dict[str, ScenarioResult]) -> list[str]:
    idle, workers = found.get("idle-default"), found.get("workers-memory")
    startup = found.get("startup-default")
    if not (idle or workers or startup):
        return []
    lines = ["", "## Memory and start-up with the default configuration", ""]
    if idle:
        lines += [
            f"One idle process: RSS {_mib(idle.extra.get('rss_kb'))} MiB, PSS "
            f"{_mib(idle.extra.get('pss_kb'))} MiB, USS {_mib(idle.extra.get('uss_kb'))} MiB; "
            f"after a few seconds of load RSS {_mib(idle.extra.get('rss_after_load_kb'))} MiB.",
            "",
        ]
    if workers:
        lines += ["`serve --workers N`, idle, from /proc/<pid>/smaps_rollup (MiB):", ""]
        rows = []
        for key in sorted(k for k in workers.extra if k.startswith("workers_")):
            tree = workers.extra[key]
            each = tree.get("workers", [])
            rows.append(
                [
                    key.removeprefix("workers_"),
                    _mib(tree["supervisor"].get("pss")),
                    " / ".join(_mib(worker.get("pss")) for worker in each),
                    " / ".join(_mib(worker.get("uss")) for worker in each),
                    _mib(tree.get("total_pss_kb")),
                ]
            )
        lines += _table(
            ["workers", "supervisor PSS", "worker PSS", "worker USS", "total PSS"], rows
        )
        added = workers.extra.get("pss_per_added_worker_kb")
        lines += ["", f"Each worker beyond the first adds {_mib(added)} MiB PSS.", ""]
        after = workers.extra.get("pss_per_added_worker_after_load_kb")
        if after is not None:
            lines += [
                f"After a few seconds of load on every worker (copy-on-write pages the "
                f"workers have since written to are their own): {_mib(after)} MiB PSS per "
                f"added worker, the busiest worker's USS "
                f"{_mib(workers.extra.get('worker_uss_after_load_kb'))} MiB.",
                "",
            ]
    if startup:
        runs = ", ".join(f"{value:.3f}" for value in startup.extra.get("runs_s", []))
        floor = ", ".join(f"{value:.3f}" for value in startup.extra.get("floor_runs_s", []))
        lines += [
            f"Exec to the first served call: median {_num(startup.extra.get('median_s'), 3)} s "
            f"(runs: {runs}); the import floor `{IMPORT_FLOOR}` in the same run: median "
            f"{_num(startup.extra.get('floor_median_s'), 3)} s (runs: {floor}). CPU seconds: "
            f"{_num(startup.extra.get('cpu_median_s'), 3)} against "
            f"{_num(startup.extra.get('floor_cpu_median_s'), 3)}. The proxy's modules were "
            "byte-compiled first, as installing it does.",
        ]
    return lines


# --- plot ---------------------------------------------------------------------------------------

SERIES: tuple[tuple[str, str, str], ...] = (
    ("proxy unary", "proxy-unary-c", "tab:blue"),
    ("floor unary", "floor-unary-c", "tab:blue"),
    ("llm floor unary", "llm-floor-unary-c", "tab:blue"),
    ("proxy stream", "proxy-stream-c", "tab:orange"),
    ("floor stream", "floor-stream-c", "tab:orange"),
    ("llm floor stream", "llm-floor-stream-c", "tab:orange"),
    ("proxy stream 200 chunks", "proxy-stream200-c", "tab:green"),
    ("floor stream 200 chunks", "floor-stream200-c", "tab:green"),
)


def series_points(
    results: Sequence[ScenarioResult], prefix: str, value: Callable[[ScenarioResult], float | None]
) -> list[tuple[int, float]]:
    points = []
    for result in by_name(results).values():
        if not result.name.startswith(prefix) or result.concurrency is None:
            continue
        if not result.name.removeprefix(prefix).isdigit():
            continue
        measured = value(result)
        if measured is not None:
            points.append((result.concurrency, measured))
    return sorted(points)


def plot(results: Sequence[ScenarioResult], path: Path, title: str) -> bool:
    """Throughput and p99 latency against concurrency, proxy against floor. False if no data."""
    # Imported by name so that type-checking and the unit tests do not need the optional
    # `bench` dependencies installed.
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    drawn = False
    for label, prefix, colour in SERIES:
        style = "--" if label.startswith("floor") else ":" if label.startswith("llm") else "-"
        rps = series_points(results, prefix, lambda r: r.rps)
        p99 = series_points(
            results, prefix, lambda r: r.latency.p99_ms if r.latency is not None else None
        )
        if rps:
            drawn = True
            left.plot(*zip(*rps, strict=True), style, marker="o", color=colour, label=label)
        if p99:
            right.plot(*zip(*p99, strict=True), style, marker="o", color=colour, label=label)
    if not drawn:
        plt.close(figure)
        return False
    for axes in (left, right):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrent calls")
        axes.grid(True, which="both", alpha=0.3)
    left.set_ylabel("requests per second")
    left.set_title("throughput")
    right.set_ylabel("p99 latency, ms")
    right.set_yscale("log")
    right.set_title("p99 latency")
    left.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def read_jsonl(path: Path) -> list[ScenarioResult]:
    return [
        ScenarioResult.from_json(json.loads(line))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def write(results: Sequence[ScenarioResult], out_dir: Path, meta: dict[str, Any]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    report = out_dir / "report.md"
    report.write_text(markdown(results, meta))
    written.append(report)
    try:
        image = out_dir / "plot.png"
        if plot(results, image, f"llm-proxy vs grpc.aio floor ({meta.get('profile', '')})"):
            written.append(image)
    except ImportError:
        pass
    return written
