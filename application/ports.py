"""The ports use cases depend on. Adapters implement them; tests fake them."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from domain.answer import GatewayEvent, ModelOutput
from domain.catalog import Catalog, ModelDescription
from domain.ledger import DailyUsage, GroupBy, UsageEntry, UsageTotal
from domain.outcome import Method, RequestRecord
from domain.policy import ServerPolicy
from domain.quota import Adjustment, Breach, Charge
from domain.request import ModelInvocation
from domain.usage import Usage


class ModelGateway(Protocol):
    """Runs a prompt on a served model. Cancelling the awaiting task must stop the model call."""

    async def complete(self, invocation: ModelInvocation) -> ModelOutput: ...

    def stream(self, invocation: ModelInvocation) -> AsyncGenerator[GatewayEvent, None]:
        """Text chunks and whole tool calls as the model produces them, then one UsageReport.

        Problems the model's own rules find in the request (its options, for example) are
        raised as domain errors before the model is called."""
        ...


class EmbeddingGateway(Protocol):
    """Runs embedding models: a vector per text."""

    def models(self) -> tuple[ModelDescription, ...]:
        """The embedding models served, with their aliases."""
        ...

    async def embed(
        self, model_id: str, inputs: tuple[str, ...]
    ) -> tuple[tuple[tuple[float, ...], ...], Usage]: ...


class ModelCatalog(Protocol):
    def current(self) -> Catalog: ...


class PolicySource(Protocol):
    def current(self) -> ServerPolicy: ...


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...

    def monotonic(self) -> float: ...


class IdGenerator(Protocol):
    def new_request_id(self) -> str: ...


class RequestObserver(Protocol):
    """Told about every request: logging and metrics live behind this port.

    Both calls are on the hot path of every request, so implementations must be cheap and must
    not raise. Every request_started is followed by exactly one request_finished.
    """

    def request_started(self, method: Method, transport: str) -> None: ...

    def request_finished(self, record: RequestRecord) -> None: ...


class RefusalObserver(Protocol):
    """Told about every call refused before it reached a use case (no valid credentials, a
    request body that does not decode). Such calls are cheap for anyone to send by the
    thousand, so implementations must not log each one, and must be cheap and never raise.

    `reason` is one of a small fixed set of names (a metric label); `peer` is the caller's
    address as the transport names it; `detail` is the message the caller was given.
    """

    def call_refused(self, reason: str, peer: str, detail: str) -> None: ...


AttributeValue = str | int | float | bool


class Span(Protocol):
    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


class Tracer(Protocol):
    """Opens a span around a piece of a use case; the span in force when it opens is its parent."""

    def span(self, name: str) -> AbstractContextManager[Span]: ...


class UsageLedger(Protocol):
    """Where every finished request is kept durably (accounting, reports, budgets).

    append() is on every request's path: it queues and returns at once, never waits for
    storage and never raises; rows that can finally not be stored are counted and logged.
    """

    def append(self, entry: UsageEntry) -> None: ...


class UsageHistory(Protocol):
    """Reads the ledger back."""

    async def totals(self, since: float, group_by: GroupBy) -> list[UsageTotal]:
        """Sums over the rows finished at or after `since` (unix seconds), one per group,
        largest cost first."""
        ...

    async def daily_usage(self, since: float) -> list[DailyUsage]:
        """Tokens and cost per UTC day, subject, team and model since `since`: what budgets
        are rebuilt from after a restart."""
        ...


class QuotaStoreUnavailable(Exception):
    """The store of quota counters cannot be reached (Redis down, say)."""


class QuotaStore(Protocol):
    """Where quota counters live: one process's memory, the supervisor's, or Redis.

    Each call is atomic over all the counters it names, and is one round trip.
    Raises QuotaStoreUnavailable when the store cannot be reached.
    """

    # True when calls complete without waiting for anything (this process's memory).
    local: bool

    async def reserve(self, charges: Sequence[Charge], now: float) -> Breach | None:
        """Apply every charge if each fits its limit; else change nothing and say which
        did not fit."""
        ...

    async def adjust(self, adjustments: Sequence[Adjustment], now: float) -> None: ...

    async def usage(self, charges: Sequence[Charge], now: float) -> list[float]:
        """The current value of each charge's counter (requests in the last minute for a
        log, the window's total, or the gauge), without changing anything."""
        ...

    async def check(self) -> None:
        """Return if the store can be reached; raise QuotaStoreUnavailable if not."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class LocalQuotaStore(QuotaStore, Protocol):
    """A QuotaStore in this process's memory (`local` is True). Its calls complete at once,
    so admission makes them directly instead of awaiting a coroutine that never suspends."""

    def reserve_now(self, charges: Sequence[Charge], now: float) -> Breach | None: ...

    def reserve_amounts(
        self, charges: Sequence[Charge], amounts: Sequence[float], now: float
    ) -> Breach | None:
        """reserve_now with each charge's amount given apart (ChargePlan.amounts), so the
        charges themselves can be reused by every request."""
        ...

    def adjust_now(self, adjustments: Sequence[Adjustment], now: float) -> None: ...

    def settle_now(self, deltas: Sequence[tuple[Charge, float]], now: float) -> None:
        """adjust_now for a request's own charges and how much each changes
        (domain.quota.settlement_deltas): no adjustment objects made on the way."""
        ...
