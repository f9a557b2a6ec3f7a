"""The scenarios: what each measures, against which servers, and how they are selected.

The run they take part in (profiles, servers, clients, measuring) is bench/session.py."""

from __future__ import annotations

import fnmatch
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench import footprint, loadgen, procinfo, servers
from bench.session import (
    CHUNKS_MODEL,
    ECHO,
    SLOW_MODEL,
    STREAM_CHUNKS,
    Bench,
    Measurement,
    Profile,
    workers_wanted,
)
from bench.stats import LatencySummary, ScenarioResult, merge_counts

# --- scenario bodies ----------------------------------------------------------------------------


Wanted = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A unit of work that yields one result per member; members can be selected one by one."""

    name: str
    about: str
    members: tuple[str, ...]
    run: Callable[[Bench, Wanted], list[ScenarioResult]]


def _single(name: str, about: str, run: Callable[[Bench], ScenarioResult]) -> Scenario:
    return Scenario(name, about, (name,), lambda bench, wanted: [run(bench)])


@dataclass(frozen=True, slots=True)
class Side:
    """One of the servers a comparison alternates between."""

    name: str
    target: str
    server_key: str
    model: str | None = None
    auth: bool = False
    channels: int = 1


def _skipped(side: Side, mode: str, concurrency: int, why: str) -> ScenarioResult:
    return ScenarioResult(
        name=side.name, target=side.target, mode=mode, concurrency=concurrency, skipped=why
    )


def _comparison(
    name: str,
    about: str,
    mode: loadgen.Mode,
    concurrency: int,
    sides: Sequence[Side],
    *,
    prompt: str = "hello",
) -> Scenario:
    """Sides measured in alternating rounds (A B, B A, ...), one result each.

    On a shared two-core machine the background load drifts by the second; alternating short
    rounds lets every side see the same mix of it, which keeps their ratio honest. With three
    sides or more the rounds follow round_orders(), so that no side is always measured in the
    same place or right after the same other side.
    """

    def run(bench: Bench, wanted: Wanted) -> list[ScenarioResult]:
        chosen = [side for side in sides if wanted(side.name)]
        results: dict[str, ScenarioResult] = {}
        live: list[Side] = []
        for side in chosen:
            why = bench.unavailable(side.server_key)
            if why is None and side.auth and bench.auth() is None:
                why = "this build of the proxy has no auth settings yet"
            if why is not None:
                results[side.name] = _skipped(side, mode, concurrency, why)
            else:
                live.append(side)
        if results and len(sides) > 1:
            # A side measured alone would only repeat a number another scenario gives.
            for side in live:
                results[side.name] = _skipped(
                    side, mode, concurrency, "what it is compared with cannot run in this build"
                )
            live = []
        orders = round_orders(len(live), bench.profile.rounds) if len(live) > 1 else [[0]]
        rounds = len(orders)
        measured: dict[str, Measurement] = {}
        for order in orders:
            for side in (live[index] for index in order):
                setup = bench.auth() if side.auth else None
                one = bench.measure(
                    bench.server(side.server_key),
                    mode,
                    concurrency,
                    model=side.model,
                    prompt=prompt,
                    token=setup.token if setup else None,
                    duration_s=bench.profile.duration_s / rounds,
                    channels=side.channels,
                )
                earlier = measured.get(side.name)
                measured[side.name] = one if earlier is None else earlier.then(one)
        for side in live:
            result = measured[side.name].summarize(side.name, side.target, mode, concurrency)
            if side.auth:
                result.extra["auth"] = True
            if side.channels > 1:
                result.extra["channels_per_client"] = side.channels
            results[side.name] = result
        return [results[side.name] for side in chosen]

    return Scenario(name, about, tuple(side.name for side in sides), run)


def round_orders(sides: int, rounds: int) -> list[list[int]]:
    """The order the sides go in, round by round: at least `rounds` rounds, and whole
    Williams designs (for two sides: A B, B A). Every side then runs in every place, and right
    after every other side, equally often. (With three sides in A B C, C B A rounds the
    middle one always ran second and always right after another server; whatever that does
    to a measurement, it did it to that side alone.)"""
    base = [0]
    low, high = 1, sides - 1
    while len(base) < sides:
        base.append(low)
        low += 1
        if len(base) < sides:
            base.append(high)
            high -= 1
    design = [[(place + shift) % sides for place in base] for shift in range(sides)]
    if sides % 2:
        design += [order[::-1] for order in design]
    return design * max(1, -(-rounds // len(design)))


def _floor_vs_proxy(
    label: str, mode: loadgen.Mode, concurrency: int, model: str | None, prompt: str
) -> Scenario:
    name = f"{label}-c{concurrency}"
    sides = [Side(f"floor-{name}", "floor", "floor")]
    if model is not None:
        # What calling llm costs by itself: the floor answering from the same model.
        sides.append(Side(f"llm-floor-{name}", "llm-floor", "llm-floor", model=model))
    sides.append(Side(f"proxy-{name}", "proxy", "proxy", model=model))
    against = "floor, llm floor and proxy" if model is not None else "floor against proxy"
    about = f"{mode} at concurrency {concurrency}, {against}" + (
        f" ({model}, {prompt!r})" if model else ""
    )
    return _comparison(name, about, mode, concurrency, sides, prompt=prompt)


def _auth_comparison(mode: loadgen.Mode, concurrency: int) -> Scenario:
    name = f"auth-{mode}-c{concurrency}"
    sides = [
        Side(f"auth-off-{mode}-c{concurrency}", "proxy", "proxy", model=ECHO),
        Side(f"auth-on-{mode}-c{concurrency}", "proxy", "proxy-auth", model=ECHO, auth=True),
    ]
    about = f"{mode} at concurrency {concurrency}, bearer-token auth off against on"
    return _comparison(name, about, mode, concurrency, sides)


def _workers_comparison(concurrency: int) -> Scenario:
    # Workers share the port, so the kernel spreads connections, not calls: both sides open
    # several connections per client so that every worker gets some.
    channels = 4 * workers_wanted()
    sides = [
        Side(f"workers-1-unary-c{concurrency}", "proxy", "proxy", model=ECHO, channels=channels),
        Side(
            f"workers-n-unary-c{concurrency}",
            "proxy",
            "proxy-workers",
            model=ECHO,
            channels=channels,
        ),
    ]
    about = f"unary at concurrency {concurrency}, one worker against one per core"
    return _comparison(f"workers-unary-c{concurrency}", about, "unary", concurrency, sides)


def _limits_comparison(concurrency: int) -> Scenario:
    name = f"limits-unary-c{concurrency}"
    sides = [
        Side(f"limits-off-unary-c{concurrency}", "proxy", "proxy-plain", model=ECHO),
        Side(f"limits-memory-unary-c{concurrency}", "proxy", "proxy-limits-memory", model=ECHO),
        Side(f"limits-redis-unary-c{concurrency}", "proxy", "proxy-limits-redis", model=ECHO),
    ]
    about = (
        f"unary at concurrency {concurrency}, limits off against in-memory and Redis counters "
        "(requests/min, tokens/min and a spend budget on every request)"
    )
    return _comparison(name, about, "unary", concurrency, sides)


def _ledger_comparison(concurrency: int) -> Scenario:
    name = f"ledger-unary-c{concurrency}"
    sides = [
        Side(f"ledger-off-unary-c{concurrency}", "proxy", "proxy-plain", model=ECHO),
        Side(f"ledger-sqlite-unary-c{concurrency}", "proxy", "proxy-ledger-sqlite", model=ECHO),
    ]
    about = f"unary at concurrency {concurrency}, usage ledger off against SQLite"
    return _comparison(name, about, "unary", concurrency, sides)


def _direct_scenario(
    name: str, model: str, *, stream: bool, use_async: bool, prompt: str = "hello"
) -> Scenario:
    def run(bench: Bench) -> ScenarioResult:
        argv = [
            sys.executable,
            "-m",
            "bench.direct",
            "--model",
            model,
            "--prompt",
            prompt,
            "--duration",
            str(bench.profile.direct_duration_s),
        ]
        if stream:
            argv.append("--stream")
        if use_async:
            argv.append("--use-async")
        completed = subprocess.run(
            argv,
            cwd=servers.ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "LLM_USER_PATH": str(bench.out_dir / "llm-user")},
        )
        if completed.returncode != 0:
            raise RuntimeError(completed.stderr.strip()[-800:])
        data = json.loads(completed.stdout)
        return ScenarioResult(
            name=name,
            target="direct",
            mode="stream" if stream else "unary",
            concurrency=1,
            clients=1,
            requests=data["requests"],
            duration_s=data["duration_s"],
            rps=data["rps"],
            latency=None if data["latency"] is None else LatencySummary(**data["latency"]),
            ttfc=None if data["ttfc"] is None else LatencySummary(**data["ttfc"]),
            chunks_per_stream=data["chunks_per_stream"] if stream else None,
            extra={"model": model, "async": use_async},
        )

    kind = "async" if use_async else "sync"
    what = "streamed" if stream else "whole"
    return _single(name, f"{model} called in-process through llm ({kind}, {what})", run)


def _open_streams_scenario(streams: int, batch: int) -> Scenario:
    name = f"open-streams-{streams}" if batch else f"open-streams-burst-{streams}"

    def run(bench: Bench) -> ScenarioResult:
        # Long enough for every stream to be open at once even at a slow opening rate.
        hold_s = max(5.0, streams / 400)
        server = bench.fresh_proxy(name)
        server.start()
        try:
            bench.load(
                f"{name}-warmup",
                "proxy",
                server,
                "stream",
                16,
                model=SLOW_MODEL,
                prompt="hold=0",
                duration_s=0.5,
                warmup_s=0.2,
            )
            time.sleep(0.5)
            rss_idle = server.rss_kb()
            open_rss: dict[str, int] = {}

            def when_open(opened: int, open_s: float) -> None:
                open_rss["rss"] = server.rss_kb()

            spec = loadgen.OpenStreamsSpec(
                target=server.target,
                streams=streams,
                model=SLOW_MODEL,
                prompt=f"hold={hold_s:g}",
                open_timeout_s=hold_s,
                total_timeout_s=hold_s * 3 + 30,
                batch=batch,
                # The server admits server.max_concurrent_streams (1000) per connection; more
                # channels, not more streams on one, are how a client opens thousands.
                channels=-(-streams // 1000),
            )
            cpu_before = server.cpu_s()
            outcome = bench.pool.run_open_streams(spec, when_open)
            cpu = server.cpu_s() - cpu_before
            time.sleep(0.5)
            rss_after = server.rss_kb()
        finally:
            server.stop()
        rss_open = open_rss.get("rss", 0)
        dropped = streams - outcome.completed
        result = ScenarioResult(
            name=name,
            target="proxy",
            mode="open-streams",
            concurrency=streams,
            clients=1,
            requests=outcome.completed,
            errors=outcome.errors,
            duration_s=outcome.wall_s,
            ttfc=LatencySummary.of(outcome.ttfc),
            server_rss_before_kb=rss_idle,
            server_rss_after_kb=rss_after,
            server_cpu_s_per_req=cpu / outcome.completed if outcome.completed else None,
            extra={
                "streams": streams,
                "batch": batch or streams,
                "hold_s": hold_s,
                "opened": outcome.opened,
                "peak_open": outcome.peak_open,
                "all_open_after_s": outcome.open_s,
                "server_rss_all_open_kb": rss_open,
                "kb_per_stream": (rss_open - rss_idle) / streams if rss_open else None,
                "dropped": dropped,
                "client_rss_kb": outcome.rss_kb,
                "fd_limit": procinfo.raise_fd_limit(),
            },
        )
        if outcome.peak_open < streams:
            result.notes.append(
                f"only {outcome.peak_open} of {streams} streams were open at the same time"
            )
        return result

    how = f"opened {batch} at a time" if batch else "all opened in one burst"
    return _single(
        name,
        f"{streams} streams held open at once on {SLOW_MODEL} ({how}): memory, none dropped",
        run,
    )


def _startup(bench: Bench) -> ScenarioResult:
    times: list[float] = []
    for index in range(bench.profile.startup_runs):
        server = bench.fresh_proxy(f"startup-{index}")
        try:
            times.append(server.start())
        finally:
            server.stop()
    floor = servers.floor_server(bench.log_dir)
    try:
        floor_s = floor.start()
    finally:
        floor.stop()
    return ScenarioResult(
        name="startup",
        target="proxy",
        mode="startup",
        requests=len(times),
        duration_s=statistics.median(times),
        latency=LatencySummary.of(times),
        extra={"runs_s": times, "median_s": statistics.median(times), "floor_s": floor_s},
    )


def _idle(bench: Bench) -> ScenarioResult:
    server = bench.fresh_proxy("idle")
    server.start()
    try:
        time.sleep(1.0)
        rss_idle = server.rss_kb()
        bench.load(
            "idle-warm", "proxy", server, "unary", 1, model=ECHO, duration_s=0.3, warmup_s=0.1
        )
        bench.load(
            "idle-warm", "proxy", server, "stream", 1, model=ECHO, duration_s=0.3, warmup_s=0.1
        )
        time.sleep(0.5)
        rss_warm = server.rss_kb()
    finally:
        server.stop()
    floor = servers.floor_server(bench.log_dir)
    try:
        floor.start()
        time.sleep(0.5)
        floor_rss = floor.rss_kb()
    finally:
        floor.stop()
    result = ScenarioResult(
        name="idle-rss",
        target="proxy",
        mode="idle",
        server_rss_before_kb=rss_idle,
        server_rss_after_kb=rss_warm,
        extra={
            "idle_rss_kb": rss_idle,
            "rss_after_first_requests_kb": rss_warm,
            "floor_idle_rss_kb": floor_rss,
        },
    )
    try:
        result.extra["import_steps"] = footprint.run_steps()
        result.extra["import_time_by_package"] = footprint.importtime_top()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result.notes.append(f"import breakdown failed: {exc}")
    return result


def _soak(bench: Bench) -> ScenarioResult:
    profile = bench.profile
    server = bench.fresh_proxy("soak")
    server.start()
    phases: list[ScenarioResult] = []
    samples: list[int] = []
    try:
        half_warm = profile.soak_warmup_requests // 2
        for mode in ("unary", "stream"):
            phases.append(
                bench.load(
                    "soak-warmup",
                    "proxy",
                    server,
                    mode,
                    16,
                    model=ECHO,
                    max_requests=half_warm,
                    duration_s=profile.soak_cap_s,
                    warmup_s=0.1,
                )
            )
        rss_warm = server.rss_kb()
        samples.append(rss_warm)
        cpu_before = server.cpu_s()
        measured: list[ScenarioResult] = []
        # Alternating in slices lets the RSS samples show a trend rather than two points.
        slices = 10
        per_slice = profile.soak_requests // slices
        started = time.perf_counter()
        for index in range(slices):
            remaining = profile.soak_cap_s * 2 - (time.perf_counter() - started)
            if remaining <= 0:
                break
            measured.append(
                bench.load(
                    "soak",
                    "proxy",
                    server,
                    "unary" if index % 2 == 0 else "stream",
                    16,
                    model=ECHO,
                    max_requests=per_slice,
                    duration_s=remaining,
                    warmup_s=0.0,
                )
            )
            samples.append(server.rss_kb())
        cpu = server.cpu_s() - cpu_before
        wall = time.perf_counter() - started
    finally:
        server.stop()
    done = sum(phase.requests for phase in measured)
    rss_after = samples[-1]
    result = ScenarioResult(
        name="soak",
        target="proxy",
        mode="soak",
        concurrency=16,
        requests=done,
        errors=merge_counts(phase.errors for phase in phases + measured),
        duration_s=wall,
        rps=done / wall if wall > 0 else None,
        server_rss_before_kb=rss_warm,
        server_rss_after_kb=rss_after,
        server_cpu_s_per_req=cpu / done if done else None,
        extra={
            "warmup_requests": sum(phase.requests for phase in phases),
            "rss_samples_kb": samples,
            "growth_kb": rss_after - rss_warm,
            "bytes_per_request": (rss_after - rss_warm) * 1024 / done if done else None,
        },
    )
    if done < profile.soak_requests:
        result.notes.append(f"stopped at the time cap after {done} of {profile.soak_requests}")
    return result


# --- footprint: the default configuration's memory, per worker, and start-up -----------------

WORKER_COUNTS = (2, 4)


def _default_env(bench: Bench) -> dict[str, str]:
    """Only where the default configuration writes (the development secret, the usage ledger,
    llm's user directory) is the bench's; everything else is `serve` as shipped."""
    return {
        **servers.foreign_root_env(),
        "LLM_USER_PATH": str(bench.out_dir / "llm-user"),
        "XDG_DATA_HOME": str(bench.out_dir / "xdg-data"),
        "XDG_CONFIG_HOME": str(bench.out_dir / "xdg-config"),
    }


def _default_proxy(
    bench: Bench, name: str, extra_args: Sequence[str] = ()
) -> servers.ServerProcess:
    # The default configuration: HTTP API, authentication and the SQLite ledger all on.
    config = bench.out_dir / "default.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("{}\n")
    return servers.proxy_server(
        name,
        bench.log_dir,
        config,
        _default_env(bench),
        ["--http-port", str(servers.free_port()), *extra_args],
    )


def _compile_proxy() -> None:
    """Byte-compile the proxy's own modules, as installing it does: with
    PYTHONDONTWRITEBYTECODE set and no cache, each start would compile them again, which the
    import floor (installed libraries only) never pays."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *footprint.PROXY_PACKAGES],
        cwd=servers.PROXY_ROOT,
        capture_output=True,
        timeout=300,
        check=False,
    )


# Long enough for every worker to see enough calls that collections have run.
WARM_LOAD_S = 3.0


def _default_token(bench: Bench) -> str | None:
    """A token the default configuration accepts, from the development secret it writes."""
    completed = subprocess.run(
        [sys.executable, "-m", "infrastructure.cli", "token", "issue", "--subject", "bench"],
        cwd=servers.PROXY_ROOT,
        env={**os.environ, **_default_env(bench)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    token = completed.stdout.strip()
    return token if completed.returncode == 0 and token else None


def _after_load(bench: Bench, name: str, server: servers.ServerProcess) -> bool:
    """Unary echo calls at c=16, each on its own connection (so that the kernel hands every
    worker some), then a second to settle; False when no token could be had."""
    token = _default_token(bench)
    if token is None:
        return False
    bench.load(
        name,
        "proxy",
        server,
        "unary",
        16,
        model=ECHO,
        token=token,
        duration_s=WARM_LOAD_S,
        warmup_s=0.2,
        channels=16,
    )
    time.sleep(1.0)
    return True


def _idle_default(bench: Bench) -> ScenarioResult:
    server = _default_proxy(bench, "idle-default")
    server.start()
    loaded: dict[str, int] = {}
    try:
        time.sleep(1.0)
        memory = procinfo.memory_kb(server.pid)
        if _after_load(bench, "idle-default-load", server):
            loaded = procinfo.memory_kb(server.pid)
    finally:
        server.stop()
    result = ScenarioResult(
        name="idle-default",
        target="proxy",
        mode="idle",
        server_rss_before_kb=memory.get("rss"),
        server_rss_after_kb=loaded.get("rss"),
        extra={
            "idle_rss_kb": memory.get("rss"),
            **{f"{k}_kb": v for k, v in memory.items()},
            **{f"{k}_after_load_kb": v for k, v in loaded.items()},
        },
    )
    if not memory:
        result.notes.append("no /proc/<pid>/smaps_rollup on this kernel: PSS/USS not read")
    return result


def _workers_memory(bench: Bench) -> ScenarioResult:
    trees: dict[int, footprint.TreeMemory] = {}
    loaded: dict[int, footprint.TreeMemory] = {}
    for count in WORKER_COUNTS:
        server = _default_proxy(bench, f"workers-memory-{count}", ["--workers", str(count)])
        offset = footprint.log_size(server.log_path)
        server.start()
        try:
            footprint.wait_for_lines(
                server.log_path, "listening on", count, after=offset, timeout_s=60
            )
            time.sleep(1.0)
            trees[count] = footprint.tree_memory(server.pid)
            if _after_load(bench, f"workers-memory-{count}-load", server):
                loaded[count] = footprint.tree_memory(server.pid)
        finally:
            server.stop()
    small, large = trees[WORKER_COUNTS[0]], trees[WORKER_COUNTS[-1]]
    extra: dict[str, Any] = {
        "pss_per_added_worker_kb": footprint.per_added_worker(small, large),
        "worker_uss_kb": large.mean_worker("uss"),
        "worker_pss_kb": large.mean_worker("pss"),
        "supervisor_pss_kb": large.supervisor.get("pss"),
        **{f"workers_{n}": tree.to_json() for n, tree in trees.items()},
    }
    if len(loaded) == len(WORKER_COUNTS):
        small, large = loaded[WORKER_COUNTS[0]], loaded[WORKER_COUNTS[-1]]
        extra["pss_per_added_worker_after_load_kb"] = footprint.per_added_worker(small, large)
        # The busiest worker: the kernel may have handed another one fewer connections.
        extra["worker_uss_after_load_kb"] = large.max_worker("uss")
        extra.update({f"workers_{n}_after_load": tree.to_json() for n, tree in loaded.items()})
    return ScenarioResult(name="workers-memory", target="proxy", mode="idle", extra=extra)


def _import_floor_run(env: dict[str, str]) -> tuple[float, float]:
    """Seconds of wall and CPU time of one `python -c footprint.IMPORT_FLOOR`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", footprint.IMPORT_FLOOR],
        cwd=servers.PROXY_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _startup_default(bench: Bench) -> ScenarioResult:
    _compile_proxy()
    env = _default_env(bench)
    floor_wall: list[float] = []
    floor_cpu: list[float] = []
    walls: list[float] = []
    cpus: list[float] = []
    for index in range(max(bench.profile.startup_runs, 3)):
        wall, cpu = _import_floor_run(env)
        floor_wall.append(wall)
        floor_cpu.append(cpu)
        server = _default_proxy(bench, f"startup-default-{index}")
        try:
            walls.append(server.start())
            # Read at once: the CPU it took to serve its first call.
            cpus.append(server.cpu_s())
        finally:
            server.stop()
    median = statistics.median(walls)
    floor_median = statistics.median(floor_wall)
    return ScenarioResult(
        name="startup-default",
        target="proxy",
        mode="startup",
        requests=len(walls),
        duration_s=median,
        latency=LatencySummary.of(walls),
        extra={
            "runs_s": walls,
            "median_s": median,
            "floor_runs_s": floor_wall,
            "floor_median_s": floor_median,
            "over_floor_s": median - floor_median,
            "cpu_median_s": statistics.median(cpus),
            "floor_cpu_median_s": statistics.median(floor_cpu),
            "cpu_over_floor_s": statistics.median(cpus) - statistics.median(floor_cpu),
        },
    )


def all_scenarios(profile: Profile) -> list[Scenario]:
    found: list[Scenario] = [_floor_vs_proxy("info", "info", 16, None, "")]
    for mode in ("unary", "stream"):
        found.extend(_floor_vs_proxy(mode, mode, c, ECHO, "hello") for c in (1, 16, 64))
    found.extend(
        _floor_vs_proxy(
            f"stream{STREAM_CHUNKS}", "stream", c, CHUNKS_MODEL, f"chunks={STREAM_CHUNKS}"
        )
        for c in (1, 16)
    )
    found.extend(
        [
            _direct_scenario("direct-echo-unary", ECHO, stream=False, use_async=False),
            _direct_scenario("direct-echo-unary-async", ECHO, stream=False, use_async=True),
            _direct_scenario("direct-echo-stream-async", ECHO, stream=True, use_async=True),
            _direct_scenario(
                f"direct-stream{STREAM_CHUNKS}-async",
                CHUNKS_MODEL,
                stream=True,
                use_async=True,
                prompt=f"chunks={STREAM_CHUNKS}",
            ),
            _auth_comparison("unary", 16),
        ]
    )
    if profile.auth_extras:
        found.extend([_auth_comparison("unary", 1), _auth_comparison("stream", 16)])
    found.append(_workers_comparison(64))
    found.extend([_limits_comparison(16), _ledger_comparison(16)])
    found.extend(_open_streams_scenario(count, batch) for count, batch in profile.open_streams)
    found.extend(
        [
            _single("startup", "seconds from exec to the first successful GetServerInfo", _startup),
            _single("idle-rss", "idle server memory, and what each import layer adds", _idle),
            _single(
                "idle-default",
                "idle RSS, PSS and USS of one process with the default configuration",
                _idle_default,
            ),
            _single(
                "workers-memory",
                "PSS and USS of each worker under --workers 2 and 4, default configuration",
                _workers_memory,
            ),
            _single(
                "startup-default",
                "exec to the first served call, default configuration, against the import floor",
                _startup_default,
            ),
            _single(
                "soak",
                f"{profile.soak_requests:,} requests: RSS after warm-up against RSS after",
                _soak,
            ),
        ]
    )
    return found


def select(
    scenarios: Iterable[Scenario], only: Sequence[str], skip: Sequence[str]
) -> list[tuple[Scenario, Wanted]]:
    """Scenarios with a wanted member, each with the test of which members are wanted.

    A pattern matching a scenario's own name (e.g. `unary-c16`) applies to all its members;
    one matching a member (e.g. `proxy-unary-c16`) to that member alone.
    """
    chosen: list[tuple[Scenario, Wanted]] = []
    for scenario in scenarios:

        def wanted(member: str, scenario_name: str = scenario.name) -> bool:
            names = (member, scenario_name)
            matches = [fnmatch.fnmatchcase(n, p) for n in names for p in only]
            if only and not any(matches):
                return False
            return not any(fnmatch.fnmatchcase(n, p) for n in names for p in skip)

        if any(wanted(member) for member in scenario.members):
            chosen.append((scenario, wanted))
    return chosen
