"""`python -m bench`: run the benchmark scenarios and write the report.

Every scenario prints one JSON line on stdout as it finishes; the same lines, a Markdown report
and a PNG plot land in bench/results/<profile>/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import procinfo, report, servers
from bench.scenarios import all_scenarios, select
from bench.session import FULL, QUICK, Bench, longer
from bench.stats import ScenarioResult

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small counts and short runs (under 2 minutes)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only scenarios whose name matches (glob, comma-separated, repeatable)",
    )
    parser.add_argument(
        "--skip", action="append", default=[], metavar="PATTERN", help="skip matching scenarios"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--longer",
        type=int,
        default=1,
        metavar="N",
        help="measure N times as long, in N times as many rounds: for costs of a few percent, "
        "which one run's noise can hide or double",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        help="client processes for loads with concurrency > 1 (default: 1 on two cores or "
        "fewer, where another process only takes CPU from the server; else cores - 1)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument(
        "--proxy-root",
        type=Path,
        default=None,
        help="run the proxy from this checkout (e.g. a git worktree of an earlier commit) "
        "instead of this one; the floor and the load generator stay this checkout's. "
        "`python -m bench.compare` puts two runs side by side",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the report and plot from the results.jsonl already in the results directory",
    )
    return parser.parse_args(argv)


def _patterns(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _loadavg() -> str:
    """1, 5 and 15-minute load averages: anything near the core count means a busy machine."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def default_clients() -> int:
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(cores - 1, 4)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = longer(QUICK if args.quick else FULL, args.longer)
    out_dir: Path = args.out or RESULTS / profile.name
    scenarios = select(all_scenarios(profile), _patterns(args.only), _patterns(args.skip))
    if args.list:
        for scenario in all_scenarios(profile):
            print(f"{scenario.name:26} {scenario.about}")
            if scenario.members != (scenario.name,):
                print(f"{'':28}results: {', '.join(scenario.members)}")
        return 0
    jsonl = out_dir / "results.jsonl"
    clients = args.clients or default_clients()
    if args.proxy_root is not None:
        servers.use_proxy_root(args.proxy_root)
    meta = {
        "profile": profile.name,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "client processes": clients,
        "load average at start": _loadavg(),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "unset"),
        "proxy from": str(servers.PROXY_ROOT),
    }
    if args.report_only:
        for path in report.write(report.read_jsonl(jsonl), out_dir, meta):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    if not scenarios:
        print("no scenario matches", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    meta["fd limit"] = procinfo.raise_fd_limit()
    results: list[ScenarioResult] = []
    failed = 0
    started = time.monotonic()
    with jsonl.open("w") as sink:

        def emit(result: ScenarioResult) -> None:
            line = json.dumps(result.to_json())
            print(line, flush=True)
            sink.write(line + "\n")
            sink.flush()
            results.append(result)

        bench = Bench(profile=profile, out_dir=out_dir, clients=clients)
        try:
            for scenario, wanted in scenarios:
                print(f"# {scenario.name}: {scenario.about}", file=sys.stderr, flush=True)
                try:
                    for result in scenario.run(bench, wanted):
                        emit(result)
                except Exception as exc:
                    failed += 1
                    for member in filter(wanted, scenario.members):
                        emit(
                            ScenarioResult(
                                name=member,
                                target="?",
                                mode="failed",
                                notes=[f"failed: {type(exc).__name__}: {exc}"],
                            )
                        )
        finally:
            bench.close()
    meta["wall time"] = f"{time.monotonic() - started:.0f} s"
    meta["load average at end"] = _loadavg()
    for path in report.write(results, out_dir, meta):
        print(f"wrote {path}", file=sys.stderr)
    for check in report.check_targets(results):
        verdict = {True: "met", False: "MISSED", None: "n/a"}[check.met]
        print(f"{verdict:7} {check.name}: {check.measured} ({check.goal})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
