"""What the server runner starts, drains and stops: one listener per transport, and /metrics.

Each listener drains (stops advertising itself as ready while still answering) and stops
(refuses new work, lets in-flight work finish within a grace period, cancels the rest); the
runner applies SIGTERM to all of them alike.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import grpc

from adapters.grpc.health import GrpcHealth

if TYPE_CHECKING:
    from adapters.metrics import MetricsEndpoint


class Listener(Protocol):
    name: str

    async def drain(self) -> None:
        """Health and readiness say not serving from now on; requests are still answered."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Let in-flight work finish for up to grace_s, then cancel it; 0 cancels at once,
        also while an earlier, longer stop is still waiting."""
        ...


class GrpcListener:
    name = "grpc"

    def __init__(self, server: grpc.aio.Server, health: GrpcHealth | None) -> None:
        self.server = server
        self._health = health

    async def drain(self) -> None:
        if self._health is not None:
            await self._health.shutting_down()

    async def stop(self, grace_s: float) -> None:
        await self.drain()
        await self.server.stop(grace_s)


class MetricsListener:
    """/metrics stays up until the transports have stopped, so a drain can be watched."""

    name = "metrics"

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint
        self._stopped = False

    async def drain(self) -> None:
        return None

    async def stop(self, grace_s: float) -> None:
        if not self._stopped:
            self._stopped = True
            await asyncio.to_thread(self.endpoint.stop)
