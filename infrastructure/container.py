"""The composition root: the only place that knows which adapter implements which port."""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.grpc.auth import current_principal
from adapters.grpc.server import build_server
from adapters.grpc.servicer import ProxyServicer
from adapters.llm import LlmGateway, LlmModelRegistry
from application._common import PromptPipeline
from application.admission import Admission
from application.describe_server import DescribeServer
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from infrastructure import security
from infrastructure.config.settings import Settings
from infrastructure.log import LoggingObserver
from infrastructure.runtime import (
    ReloadablePolicy,
    SystemClock,
    UuidRequestIds,
    policy_from,
    server_version,
)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    request_ids = providers.Singleton(UuidRequestIds)
    version = providers.Object(server_version())
    policy = providers.Singleton(
        ReloadablePolicy, providers.Callable(policy_from, settings, version)
    )
    observer = providers.Singleton(LoggingObserver)

    catalog = providers.Singleton(
        LlmModelRegistry,
        plugin_modules=settings.provided.models.plugin_modules,
        serve=settings.provided.models.serve,
        aliases=settings.provided.models.aliases,
        default_model=settings.provided.models.default,
    )
    gateway = providers.Singleton(
        LlmGateway, catalog, max_threads=settings.provided.models.max_threads
    )

    admission = providers.Singleton(Admission, policy, clock)
    pipeline = providers.Singleton(
        PromptPipeline,
        catalog=catalog,
        policy=policy,
        clock=clock,
        ids=request_ids,
        admission=admission,
    )
    execute_prompt = providers.Singleton(ExecutePrompt, pipeline, gateway, observer)
    stream_prompt = providers.Singleton(StreamPrompt, pipeline, gateway, observer)
    describe_server = providers.Singleton(DescribeServer, catalog, policy)

    servicer = providers.Singleton(
        ProxyServicer,
        execute=execute_prompt,
        stream=stream_prompt,
        describe=describe_server,
        # Set per call by the auth interceptor; ANONYMOUS when authentication is off.
        principal=providers.Object(current_principal),
    )
    # None when JWT authentication is off (auth.enabled: false).
    token_verifier = providers.Singleton(security.token_verifier, settings)
    interceptors = providers.Singleton(security.auth_interceptors, settings, token_verifier)
    tls = providers.Singleton(security.server_credentials, settings)
    grpc_server = providers.Factory(
        build_server,
        servicer,
        min_ping_interval_s=settings.provided.server.min_ping_interval_seconds,
        max_message_bytes=settings.provided.server.max_message_bytes,
        interceptors=interceptors,
    )
