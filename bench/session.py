"""One benchmark run: its profile, the servers and client processes it starts once and reuses,
and the measurement of load against them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bench import auth, loadgen, procinfo, servers
from bench.stats import LatencySummary, ScenarioResult, merge_counts

ECHO = "echo"
CHUNKS_MODEL = "bench-chunks"
SLOW_MODEL = "bench-slow"
STREAM_CHUNKS = 200
# A client process this busy is probably what limits the measurement.
CLIENT_BOUND_UTIL = 0.85
# Cores used by processes other than the server and its clients worth a warning in the report.
OTHER_LOAD_NOTE = 0.25


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    duration_s: float
    warmup_s: float
    open_streams: tuple[tuple[int, int], ...]  # (streams, batch); batch 0 is one burst
    soak_requests: int
    soak_warmup_requests: int
    soak_cap_s: float
    startup_runs: int
    direct_duration_s: float
    rounds: int
    # Auth at c=1 and on streams, beyond the c=16 unary comparison the target is about.
    auth_extras: bool


QUICK = Profile(
    name="quick",
    duration_s=1.5,
    warmup_s=0.3,
    open_streams=((1_000, 500),),
    soak_requests=10_000,
    soak_warmup_requests=2_000,
    soak_cap_s=30.0,
    startup_runs=2,
    direct_duration_s=0.5,
    rounds=2,
    auth_extras=False,
)
FULL = Profile(
    name="full",
    duration_s=8.0,
    warmup_s=1.0,
    # grpc.aio's defaults cancel calls that wait too long to be accepted, which a burst of
    # thousands does: the ramped run measures memory per stream, the burst shows that limit.
    open_streams=((1_000, 500), (10_000, 1_000), (10_000, 0)),
    soak_requests=200_000,
    soak_warmup_requests=20_000,
    soak_cap_s=150.0,
    startup_runs=5,
    direct_duration_s=3.0,
    rounds=4,
    auth_extras=True,
)


def longer(profile: Profile, times: int) -> Profile:
    """`profile` measuring `times` as long, in `times` as many rounds of the same length."""
    if times <= 1:
        return profile
    return replace(
        profile,
        name=f"{profile.name}-x{times}",
        duration_s=profile.duration_s * times,
        rounds=profile.rounds * times,
    )


def split(total: int, parts: int) -> list[int]:
    """total spread over parts as evenly as integers allow, larger shares first."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


@dataclass
class Bench:
    """Shared state of one run: client processes and servers, started once and reused."""

    profile: Profile
    out_dir: Path
    clients: int
    _pool: loadgen.ClientPool | None = None
    _servers: dict[str, servers.ServerProcess] = field(default_factory=dict)
    _auth: auth.AuthSetup | None = None
    _auth_probed: bool = False
    _serve_help: str | None = None
    _redis: servers.RedisProcess | None = None
    _config_keys: str | None = None

    # --- resources ---------------------------------------------------------------------------

    @property
    def pool(self) -> loadgen.ClientPool:
        if self._pool is None:
            self._pool = loadgen.ClientPool(max(self.clients, 1))
        return self._pool

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"

    def config_path(self, extra: dict[str, Any] | None = None, name: str = "proxy") -> Path:
        config: dict[str, Any] = {
            # The HTTP API has its own comparison (bench/http.py); off here, as before it existed.
            "http": {"enabled": False},
            "models": {
                "plugin_modules": ["bench.bench_models"],
                "serve": [ECHO, CHUNKS_MODEL, SLOW_MODEL],
                "default": ECHO,
            },
        }
        for key, value in (extra or {}).items():
            config.setdefault(key, {}).update(value)
        if not re.search(r"^http:", self.config_keys(), re.MULTILINE):
            # A build from before the HTTP API (`--proxy-root`) refuses the unknown section.
            del config["http"]
        path = self.out_dir / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=True))
        return path

    def auth(self) -> auth.AuthSetup | None:
        if not self._auth_probed:
            self._auth_probed = True
            self._auth = auth.probe(self.out_dir, self.config_path())
        return self._auth

    def proxy_env(self, *, auth_on: bool) -> dict[str, str]:
        # XDG_DATA_HOME: the default SQLite usage ledger stays inside this run's directory.
        env = {
            "LLM_USER_PATH": str(self.out_dir / "llm-user"),
            "XDG_DATA_HOME": str(self.out_dir / "xdg-data"),
        }
        setup = self.auth()
        if setup is not None:
            env.update(setup.env_on if auth_on else setup.env_off)
        return env

    def proxy_config(self, *, auth_on: bool) -> Path:
        setup = self.auth()
        if auth_on and setup is not None:
            return self.config_path(setup.config, name="proxy-auth")
        return self.config_path()

    def server(self, key: str) -> servers.ServerProcess:
        """A long-lived server for a group of scenarios, started on first use."""
        running = self._servers.get(key)
        if running is not None and running.alive():
            return running
        if key == "floor":
            running = servers.floor_server(self.log_dir)
        elif key == "llm-floor":
            # The proxy's llm user directory: the same plugins see the same (empty) settings.
            env = {"LLM_USER_PATH": str(self.out_dir / "llm-user")}
            running = servers.floor_server(self.log_dir, llm_model=ECHO, env=env)
        elif key == "proxy":
            running = servers.proxy_server(
                key,
                self.log_dir,
                self.proxy_config(auth_on=False),
                self.proxy_env(auth_on=False),
            )
        elif key == "proxy-auth":
            running = servers.proxy_server(
                key, self.log_dir, self.proxy_config(auth_on=True), self.proxy_env(auth_on=True)
            )
        elif key == "proxy-workers":
            running = self.fresh_proxy(key, ["--workers", str(workers_wanted())])
        elif key in GOVERNANCE_CONFIGS:
            extra = GOVERNANCE_CONFIGS[key](self)
            running = servers.proxy_server(
                key,
                self.log_dir,
                self.config_path(extra, name=key),
                self.proxy_env(auth_on=False),
            )
        else:
            raise KeyError(key)
        running.start()
        self._servers[key] = running
        return running

    def fresh_proxy(self, name: str, extra_args: Sequence[str] = ()) -> servers.ServerProcess:
        """A proxy of its own, for scenarios whose memory readings must start clean."""
        return servers.proxy_server(
            name,
            self.log_dir,
            self.proxy_config(auth_on=False),
            self.proxy_env(auth_on=False),
            extra_args,
        )

    def unavailable(self, key: str) -> str | None:
        """Why the server a scenario needs cannot be had in this build, or None."""
        if key == "proxy-workers" and "--workers" not in self.serve_help():
            return "serve has no --workers option in this build"
        if key in GOVERNANCE_CONFIGS and "quotas" not in self.config_keys():
            return "this build has no quotas or usage ledger"
        if key == "proxy-limits-redis" and shutil.which("redis-server") is None:
            return "redis-server is not installed (scripts/services.sh install)"
        return None

    def config_keys(self) -> str:
        """The effective default configuration, to find out which sections this build has."""
        if self._config_keys is None:
            completed = subprocess.run(
                [sys.executable, "-m", "infrastructure.cli", "config", "show"],
                cwd=servers.PROXY_ROOT,
                env={**os.environ, **servers.foreign_root_env()},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            self._config_keys = completed.stdout
        return self._config_keys

    def redis_url(self) -> str:
        if self._redis is None:
            self._redis = servers.RedisProcess(servers.free_port())
            self._redis.start()
        return self._redis.url

    def serve_help(self) -> str:
        if self._serve_help is None:
            self._serve_help = servers.serve_help()
        return self._serve_help

    def close(self) -> None:
        for running in self._servers.values():
            running.stop()
        self._servers.clear()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # --- measuring ---------------------------------------------------------------------------

    def measure(
        self,
        server: servers.ServerProcess,
        mode: loadgen.Mode,
        concurrency: int,
        *,
        model: str | None = None,
        prompt: str = "hello",
        token: str | None = None,
        max_requests: int = 0,
        duration_s: float | None = None,
        warmup_s: float | None = None,
        channels: int = 1,
    ) -> Measurement:
        processes = max(1, min(self.clients, concurrency, self.pool.size))
        shares = split(concurrency, processes)
        caps = split(max_requests, processes) if max_requests else [0] * processes
        duration = self.profile.duration_s if duration_s is None else duration_s
        warmup = self.profile.warmup_s if warmup_s is None else warmup_s
        specs = [
            loadgen.LoadSpec(
                target=server.target,
                mode=mode,
                concurrency=share,
                duration_s=duration,
                warmup_s=warmup,
                max_requests=cap,
                model=model,
                prompt=prompt,
                token=token,
                channels=channels,
            )
            for share, cap in zip(shares, caps, strict=True)
        ]
        before: dict[str, float] = {}
        # The redis-server a proxy with Redis limits keeps its counters in works for it too.
        store = self._redis if server.name == "proxy-limits-redis" else None
        store_pid = store.process.pid if store is not None and store.process else None

        def between() -> None:
            before["rss"] = server.rss_kb()
            before["cpu"] = server.cpu_s()
            before["machine"] = procinfo.machine_busy_seconds()
            if store_pid is not None:
                before["store"] = procinfo.cpu_seconds(store_pid)

        runs = self.pool.run_load(specs, between)
        return Measurement(
            runs=runs,
            rss_before=int(before["rss"]),
            rss_after=server.rss_kb(),
            server_cpu_s=server.cpu_s() - before["cpu"],
            machine_busy_s=procinfo.machine_busy_seconds() - before["machine"],
            server_alive=server.alive(),
            store_cpu_s=procinfo.cpu_seconds(store_pid) - before["store"]
            if store_pid is not None
            else None,
        )

    def load(
        self,
        name: str,
        target: str,
        server: servers.ServerProcess,
        mode: loadgen.Mode,
        concurrency: int,
        **options: Any,
    ) -> ScenarioResult:
        measured = self.measure(server, mode, concurrency, **options)
        return measured.summarize(name, target, mode, concurrency)


@dataclass(slots=True)
class Measurement:
    """One measured phase against one server, or several such phases added together."""

    runs: list[loadgen.WorkerResult]
    rss_before: int
    rss_after: int
    server_cpu_s: float
    machine_busy_s: float
    server_alive: bool
    rounds: int = 1
    # CPU seconds of the proxy's Redis (limits kept there), which the server's figure omits.
    store_cpu_s: float | None = None

    def then(self, later: Measurement) -> Measurement:
        runs = [
            loadgen.combine(mine, theirs)
            for mine, theirs in zip(self.runs, later.runs, strict=False)
        ]
        return Measurement(
            runs=runs,
            rss_before=self.rss_before,
            rss_after=later.rss_after,
            server_cpu_s=self.server_cpu_s + later.server_cpu_s,
            machine_busy_s=self.machine_busy_s + later.machine_busy_s,
            server_alive=later.server_alive,
            rounds=self.rounds + later.rounds,
            store_cpu_s=None
            if self.store_cpu_s is None or later.store_cpu_s is None
            else self.store_cpu_s + later.store_cpu_s,
        )

    def summarize(self, name: str, target: str, mode: str, concurrency: int) -> ScenarioResult:
        result = summarize_load(
            name,
            target,
            mode,
            concurrency,
            self.runs,
            rss_before=self.rss_before,
            rss_after=self.rss_after,
            server_cpu_s=self.server_cpu_s,
            machine_busy_s=self.machine_busy_s - (self.store_cpu_s or 0.0),
            server_alive=self.server_alive,
        )
        result.extra["rounds"] = self.rounds
        if self.store_cpu_s is not None and result.requests:
            result.extra["store_cpu_s_per_req"] = self.store_cpu_s / result.requests
        return result


def summarize_load(
    name: str,
    target: str,
    mode: str,
    concurrency: int,
    runs: Sequence[loadgen.WorkerResult],
    *,
    rss_before: int,
    rss_after: int,
    server_cpu_s: float,
    machine_busy_s: float | None = None,
    server_alive: bool = True,
) -> ScenarioResult:
    ok = sum(run.ok for run in runs)
    wall = max((run.wall_s for run in runs), default=0.0)
    errors = merge_counts(run.errors for run in runs)
    chunks = sum(run.chunks for run in runs)
    utils = [run.cpu_s / run.wall_s for run in runs if run.wall_s > 0]
    client_util = max(utils, default=0.0)
    result = ScenarioResult(
        name=name,
        target=target,
        mode=mode,
        concurrency=concurrency,
        clients=len(runs),
        requests=ok,
        errors=errors,
        duration_s=wall,
        rps=ok / wall if wall > 0 else None,
        latency=LatencySummary.of(value for run in runs for value in run.latencies),
        ttfc=LatencySummary.of(value for run in runs for value in run.ttfc)
        if mode == "stream"
        else None,
        chunks_per_stream=chunks / ok if mode == "stream" and ok else None,
        server_rss_before_kb=rss_before,
        server_rss_after_kb=rss_after,
        server_cpu_s_per_req=server_cpu_s / ok if ok else None,
        client_cpu_util=client_util,
        client_bound=client_util >= CLIENT_BOUND_UTIL,
    )
    server_util = server_cpu_s / wall if wall > 0 else 0.0
    result.extra["server_cpu_util"] = server_util
    if result.client_bound:
        result.notes.append(
            f"a client process used {client_util:.0%} of a core: the client may be the limit"
        )
    cores = os.cpu_count() or 1
    if server_util + sum(utils) >= 0.9 * cores:
        result.notes.append(
            f"server and clients together used {server_util + sum(utils):.1f} of {cores} cores"
        )
    if machine_busy_s is not None and wall > 0:
        client_cpu = sum(run.cpu_s for run in runs)
        other = max(machine_busy_s - server_cpu_s - client_cpu, 0.0) / wall
        result.extra["other_cpu_util"] = other
        if other >= OTHER_LOAD_NOTE:
            result.notes.append(
                f"other processes kept {other:.2f} cores busy during the run: numbers are noisy"
            )
    if not server_alive:
        result.notes.append("the server died during the run")
    return result


# Limits that every request is checked against but none reaches: the cost of checking them.
_UNREACHED_LIMITS: dict[str, Any] = {
    "limits": {"max_requests_per_minute": 1_000_000_000},
    "quotas": {"default": {"tokens_per_minute": 10**12, "usd_per_day": 10**9}},
}


def _plain(bench: Bench) -> dict[str, Any]:
    return {"ledger": {"backend": "none"}}


def _limits_memory(bench: Bench) -> dict[str, Any]:
    return {**_UNREACHED_LIMITS, "ledger": {"backend": "none"}}


def _limits_redis(bench: Bench) -> dict[str, Any]:
    quotas = {**_UNREACHED_LIMITS["quotas"], "store": "redis", "redis_url": bench.redis_url()}
    return {**_UNREACHED_LIMITS, "quotas": quotas, "ledger": {"backend": "none"}}


def _ledger_sqlite(bench: Bench) -> dict[str, Any]:
    return {"ledger": {"backend": "sqlite", "path": str(bench.out_dir / "usage.sqlite3")}}


GOVERNANCE_CONFIGS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "proxy-plain": _plain,
    "proxy-limits-memory": _limits_memory,
    "proxy-limits-redis": _limits_redis,
    "proxy-ledger-sqlite": _ledger_sqlite,
}


def workers_wanted() -> int:
    return max(os.cpu_count() or 1, 2)
