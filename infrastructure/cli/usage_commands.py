"""`usage report` (totals from the usage ledger), `ledger migrate` (PostgreSQL schema) and
`limits show` (a subject's limits and consumption)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import click

from adapters.quota import MemoryQuotaStore
from application.caller_limits import CallerLimits, DescribeCallerLimits
from application.ports import QuotaStore
from application.rebuild_budgets import rebuild_budgets
from domain.ledger import GroupBy, UsageTotal
from domain.principal import Principal
from infrastructure.cli.common import config_option, load_or_exit
from infrastructure.config.settings import LedgerSettings, Settings
from infrastructure.ledger import build_sink, sqlite_path
from infrastructure.observability import SINGLE
from infrastructure.quotas import build_quota_store
from infrastructure.runtime import ReloadablePolicy, SystemClock, policy_from, server_version

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_since(text: str, now: float) -> float:
    """`7d`, `12h`, `30m`, `2w`, `90s` before now, or an ISO date/time; unix seconds."""
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration like 7d, 12h, 30m nor a date like 2026-11-01"
        ) from None
    return moment.timestamp()


async def _totals(settings: LedgerSettings, since: float, group_by: GroupBy) -> list[UsageTotal]:
    sink = build_sink(settings)
    if sink is None:
        raise click.ClickException("the usage ledger is off here (ledger.backend: none)")
    if settings.backend == "sqlite" and not sqlite_path(settings).exists():
        raise click.ClickException(
            f"no usage ledger at {sqlite_path(settings)} yet: the server creates it when it "
            "starts (or set ledger.path to where it keeps it)"
        )
    try:
        await sink.open()
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        return await sink.totals(since, group_by)
    finally:
        await sink.close()


def _table(totals: list[UsageTotal], group_by: GroupBy) -> str:
    header = (group_by.value, "requests", "failed", "input_tokens", "output_tokens", "cost_usd")
    rows = [
        (
            total.key if total.key is not None else "(none)",
            str(total.requests),
            str(total.failed),
            str(total.input_tokens),
            str(total.output_tokens),
            f"{total.cost_usd:.6f}",
        )
        for total in totals
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


@click.group("usage")
def usage_group() -> None:
    """Read the usage ledger."""


@usage_group.command("report")
@config_option
@click.option("--since", default="7d", show_default=True, help="7d, 12h, 30m, 2w, or a date.")
@click.option(
    "--by",
    "group_by",
    type=click.Choice([group.value for group in GroupBy]),
    default=GroupBy.SUBJECT.value,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group, in a list.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
def report(config: Path | None, since: str, group_by: str, as_json: bool, as_csv: bool) -> None:
    """Requests, tokens and cost per subject, team or model since a time, largest cost first."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    settings = load_or_exit(config)
    grouping = GroupBy(group_by)
    totals = asyncio.run(_totals(settings.ledger, parse_since(since, time.time()), grouping))
    if as_json:
        click.echo(json.dumps([{**asdict(total), group_by: total.key} for total in totals]))
        return
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            (group_by, "requests", "failed", "input_tokens", "output_tokens", "cost_usd")
        )
        for total in totals:
            writer.writerow(
                (
                    total.key or "",
                    total.requests,
                    total.failed,
                    total.input_tokens,
                    total.output_tokens,
                    total.cost_usd,
                )
            )
        click.echo(out.getvalue(), nl=False)
        return
    click.echo(_table(totals, grouping))


@click.group("ledger")
def ledger_group() -> None:
    """Manage the usage ledger's database."""


@ledger_group.command("migrate")
@config_option
def migrate(config: Path | None) -> None:
    """Create or update the PostgreSQL schema (ledger.backend: postgres). Safe to repeat."""
    settings = load_or_exit(config).ledger
    if settings.backend != "postgres" or settings.postgres_dsn is None:
        raise click.ClickException(
            f"nothing to migrate: ledger.backend is {settings.backend} (the SQLite ledger "
            "creates its own schema)"
        )
    from adapters.ledger.postgres import describe
    from adapters.ledger.postgres import migrate as run_migrations

    try:
        applied = asyncio.run(run_migrations(settings.postgres_dsn))
    except OSError as exc:
        raise click.ClickException(
            f"cannot reach PostgreSQL at {describe(settings.postgres_dsn)}: {exc}"
        ) from exc
    where = describe(settings.postgres_dsn)
    if applied:
        click.echo(f"{where}: applied schema versions {', '.join(map(str, applied))}")
    else:
        click.echo(f"{where}: schema already up to date")


@click.group("limits")
def limits_group() -> None:
    """Inspect quotas and budgets."""


async def _caller_limits(settings: Settings, principal: Principal) -> tuple[CallerLimits, str]:
    policy = ReloadablePolicy(policy_from(settings, server_version()))
    store: QuotaStore
    if settings.quotas.store == "redis":
        store = build_quota_store(settings.quotas, SINGLE)
        note = f"from Redis ({settings.quotas.redis_key_prefix}*)"
    else:
        # A server's in-memory counters cannot be read from here: budgets come from the
        # ledger, as a restarted server would rebuild them.
        memory = MemoryQuotaStore()
        sink = build_sink(settings.ledger)
        note = "budgets from the usage ledger; per-minute and concurrency counters live in "
        note += "the server's memory and show 0 here"
        if sink is not None:
            await sink.open()
            try:
                await rebuild_budgets(sink, memory, policy.current().quotas, time.time())
            finally:
                await sink.close()
        store = memory
    try:
        return await DescribeCallerLimits(policy, store, SystemClock())(principal), note
    finally:
        await store.close()


@limits_group.command("show")
@config_option
@click.argument("subject")
@click.option("--team", help="The subject's team (its token's team claim).")
@click.option("--json", "as_json", is_flag=True)
def show_limits(config: Path | None, subject: str, team: str | None, as_json: bool) -> None:
    """Effective limits of SUBJECT and its current consumption."""
    settings = load_or_exit(config)
    found, note = asyncio.run(_caller_limits(settings, Principal(subject, team=team)))
    rows = [
        {
            "scope": item.limit.scope.value,
            "owner": item.limit.owner,
            "models": item.limit.models or "*",
            "kind": item.limit.kind.value,
            "limit": item.limit.amount,
            "used": item.used,
            "remaining": item.remaining,
            "resets_at": (
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(item.resets_at))
                if item.resets_at is not None
                else None
            ),
            "source": item.limit.source,
        }
        for item in found.limits
    ]
    if as_json:
        click.echo(json.dumps({"subject": subject, "team": team, "limits": rows, "note": note}))
        return
    if not rows:
        click.echo(f"{subject}: no limits apply")
        return
    header = ("scope", "owner", "models", "kind", "limit", "used", "remaining", "resets", "rule")
    table = [
        (
            str(row["scope"]),
            str(row["owner"]) or "-",
            str(row["models"]),
            str(row["kind"]),
            f"{item.limit.amount:g}",
            f"{item.used:g}",
            f"{item.remaining:g}",
            str(row["resets_at"] or "-"),
            str(row["source"]),
        )
        for row, item in zip(rows, found.limits, strict=True)
    ]
    widths = [max(len(r[i]) for r in (header, *table)) for i in range(len(header))]
    for row in (header, *table):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not found.usage_known:
        click.echo("note: the limits store could not be reached; usage shows as 0", err=True)
    click.echo(f"({note})", err=True)
