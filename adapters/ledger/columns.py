"""The ledger's columns, in one order shared by every store."""

from __future__ import annotations

from domain.ledger import GroupBy, UsageEntry

COLUMNS = (
    "time",
    "request_id",
    "transport",
    "kind",
    "subject",
    "team",
    "model",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "duration_s",
    "first_chunk_s",
)

# Report groupings map to column names from this closed set only (they go into SQL text).
GROUP_COLUMNS = {GroupBy.SUBJECT: "subject", GroupBy.TEAM: "team", GroupBy.MODEL: "model"}

Row = tuple[float, str, str, str, str, str | None, str | None, str, int | None, int | None,
            float | None, float, float | None]  # fmt: skip


def as_row(entry: UsageEntry) -> Row:
    return (
        entry.time,
        entry.request_id,
        entry.transport,
        entry.kind,
        entry.subject,
        entry.team,
        entry.model,
        entry.outcome,
        entry.input_tokens,
        entry.output_tokens,
        entry.cost_usd,
        entry.duration_s,
        entry.first_chunk_s,
    )
