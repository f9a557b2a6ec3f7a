"""Use case: every finished prompt request becomes one row of the usage ledger."""

from __future__ import annotations

from application.ports import Clock, UsageLedger
from domain.ledger import UsageEntry
from domain.outcome import Method, RequestRecord


class RecordUsage:
    """A RequestObserver that appends each prompt request, whatever its outcome, to the
    ledger, stamped with the wall-clock time it finished."""

    def __init__(self, ledger: UsageLedger, clock: Clock) -> None:
        self._ledger = ledger
        self._clock = clock

    def request_started(self, method: Method, transport: str) -> None:
        return None

    def request_finished(self, record: RequestRecord) -> None:
        usage = record.usage
        self._ledger.append(
            UsageEntry(
                time=self._clock.now(),
                request_id=record.request_id,
                transport=record.transport,
                kind=record.method.value,
                subject=record.subject,
                team=record.team,
                model=record.model_id,
                outcome=record.outcome,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=record.cost_usd,
                duration_s=record.duration_s,
                first_chunk_s=record.first_chunk_s,
            )
        )
