"""The standard grpc.health.v1 service and server reflection, and a probe for health checks."""

from __future__ import annotations

import grpc
from grpc_health.v1 import _async as health_aio  # health.aio re-exports it, untyped
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE_NAME
from grpc_reflection.v1alpha import reflection

from llm_proxy_client.generated import llm_proxy_pb2 as pb

PROXY_SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["VibectlLLMProxy"].full_name
# "" is the whole server, as load balancers and Kubernetes probes ask by default.
HEALTH_SERVICES = ("", PROXY_SERVICE_NAME)
# Whether the shared store of limits (Redis) can be reached; only when one is configured.
LIMITS_SERVICE_NAME = "llm_proxy.limits"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcHealth:
    """Per-service serving status. NOT_SERVING until the catalog is loaded and the server has
    started; NOT_SERVING again, for good, as soon as shutdown begins."""

    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()

    def register(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def not_serving(self) -> None:
        for service in HEALTH_SERVICES:
            await self.servicer.set(service, _NOT_SERVING)

    async def serving(self) -> None:
        for service in HEALTH_SERVICES:
            await self.servicer.set(service, _SERVING)

    async def limits_reachable(self, reachable: bool, *, fail_closed: bool) -> None:
        """Report the limits store. Failing closed, the server refuses prompts without it, so
        the whole server ("", what readiness checks ask) is NOT_SERVING meanwhile; the proxy
        service's own status (what liveness asks) stays, as a restart would not help."""
        await self.servicer.set(LIMITS_SERVICE_NAME, _SERVING if reachable else _NOT_SERVING)
        if fail_closed:
            await self.servicer.set("", _SERVING if reachable else _NOT_SERVING)

    async def shutting_down(self) -> None:
        # Later set() calls are ignored, so a reload racing the shutdown cannot revive it.
        await self.servicer.enter_graceful_shutdown()


def enable_reflection(server: grpc.aio.Server, *, health: bool) -> None:
    names: list[str] = [PROXY_SERVICE_NAME, reflection.SERVICE_NAME]
    if health:
        names.append(HEALTH_SERVICE_NAME)
    reflection.enable_server_reflection(names, server)


def probe(
    target: str,
    *,
    service: str = "",
    timeout_s: float = 3.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """The status name (SERVING, NOT_SERVING, ...) the server at `target` reports for `service`.

    Raises grpc.RpcError when the server cannot be reached or does not know the service.
    """
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name
