"""The ports use cases depend on. Adapters implement them; tests fake them."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from domain.answer import GatewayEvent, ModelOutput
from domain.catalog import Catalog
from domain.outcome import RequestRecord
from domain.policy import ServerPolicy
from domain.request import ModelInvocation


class ModelGateway(Protocol):
    """Runs a prompt on a served model. Cancelling the awaiting task must stop the model call."""

    async def complete(self, invocation: ModelInvocation) -> ModelOutput: ...

    def stream(self, invocation: ModelInvocation) -> AsyncGenerator[GatewayEvent, None]:
        """Text chunks as the model produces them, then one UsageReport."""
        ...


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
    """Told about every finished request: logging and metrics live behind this port."""

    def request_finished(self, record: RequestRecord) -> None: ...
