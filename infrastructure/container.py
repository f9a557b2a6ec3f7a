"""The composition root: the only place that knows which adapter implements which port."""

from __future__ import annotations

from pathlib import Path

from dependency_injector import containers, providers

from adapters.grpc.auth import current_principal
from adapters.grpc.malformed import MalformedRequestGuard
from adapters.grpc.server import ConnectionLimits, build_server
from adapters.grpc.servicer import ProxyServicer
from adapters.llm import LlmEmbeddingGateway, LlmGateway, LlmModelRegistry
from application._common import PromptPipeline
from application.caller_limits import DescribeCallerLimits
from application.describe_server import DescribeServer
from application.embed import EmbedText
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from infrastructure import security
from infrastructure.config.settings import Settings
from infrastructure.http_api import build_http_gate, build_http_services
from infrastructure.ledger import build_ledger, build_usage_recorder
from infrastructure.log import LoggingObserver
from infrastructure.observability import (
    SINGLE,
    build_health,
    build_metrics,
    build_tracer_provider,
    chain,
    compose_observers,
    compose_refusals,
    start_metrics_endpoint,
    traced_gateway,
    tracing_interceptors,
    use_case_tracer,
)
from infrastructure.quotas import build_admission, build_quota_store
from infrastructure.refusal_log import RefusalLog
from infrastructure.reload import (
    CatalogReload,
    LogLevelReload,
    PolicyReload,
    Reloader,
    SettingsLoader,
)
from infrastructure.runtime import (
    RandomRequestIds,
    ReloadablePolicy,
    SystemClock,
    policy_from,
    server_version,
)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    request_ids = providers.Singleton(RandomRequestIds)
    version = providers.Object(server_version())
    policy = providers.Singleton(
        ReloadablePolicy, providers.Callable(policy_from, settings, version)
    )
    # "single", or "worker" when started by `serve --workers N` (shared port, no own /metrics).
    role = providers.Object(SINGLE)
    # How to re-read the configuration on SIGHUP (None: cannot), and the file to watch.
    settings_loader: providers.Object[SettingsLoader | None] = providers.Object(None)
    config_path: providers.Object[Path | None] = providers.Object(None)

    logging_observer = providers.Singleton(LoggingObserver)
    metrics = providers.Singleton(build_metrics, settings)
    # The usage ledger (None when ledger.backend is none) records every request as it ends.
    ledger = providers.Singleton(build_ledger, settings.provided.ledger, metrics)
    usage_recorder = providers.Singleton(build_usage_recorder, ledger, clock)
    observer = providers.Singleton(compose_observers, logging_observer, metrics, usage_recorder)
    # Calls refused before the service: a rate-limited log line and a metric, never a flood.
    refusal_log = providers.Singleton(RefusalLog)
    refusals = providers.Singleton(compose_refusals, refusal_log, metrics)
    metrics_endpoint = providers.Singleton(
        start_metrics_endpoint, settings.provided.metrics, metrics, role
    )
    tracer_provider = providers.Singleton(build_tracer_provider, settings.provided.tracing)
    tracer = providers.Singleton(use_case_tracer, tracer_provider)
    health = providers.Singleton(build_health, settings.provided.server)

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
    # What the use cases call: the gateway, in a span per model call when tracing is on.
    model_gateway = providers.Singleton(traced_gateway, gateway, tracer_provider)

    quota_store = providers.Singleton(build_quota_store, settings.provided.quotas, role)
    admission = providers.Singleton(
        build_admission, quota_store, clock, settings.provided.quotas, metrics
    )
    pipeline = providers.Singleton(
        PromptPipeline,
        catalog=catalog,
        policy=policy,
        clock=clock,
        ids=request_ids,
        admission=admission,
    )
    execute_prompt = providers.Singleton(
        ExecutePrompt, pipeline, model_gateway, observer, tracer=tracer
    )
    stream_prompt = providers.Singleton(
        StreamPrompt, pipeline, model_gateway, observer, tracer=tracer
    )
    describe_server = providers.Singleton(DescribeServer, catalog, policy)
    caller_limits = providers.Singleton(DescribeCallerLimits, policy, quota_store, clock)
    embedding_gateway = providers.Singleton(
        LlmEmbeddingGateway, serve=settings.provided.models.serve
    )
    embed_text = providers.Singleton(EmbedText, pipeline, embedding_gateway, observer)

    servicer = providers.Singleton(
        ProxyServicer,
        execute=execute_prompt,
        stream=stream_prompt,
        describe=describe_server,
        # Set per call by the auth interceptor; ANONYMOUS when authentication is off.
        principal=providers.Object(current_principal),
        caller_limits=caller_limits,
        embed=embed_text,
    )
    # None when JWT authentication is off (auth.enabled: false).
    token_verifier = providers.Singleton(security.token_verifier, settings)
    # Every transport hands its callers' credentials to this one application service.
    identify_caller = providers.Singleton(security.caller_identity, settings, token_verifier)
    interceptors = providers.Singleton(security.auth_interceptors, identify_caller, refusals)
    tls = providers.Singleton(security.server_credentials, settings)
    # The OpenAI-compatible HTTP API over the same use cases; the gate is built in the running
    # event loop by the server runner.
    http_services = providers.Singleton(
        build_http_services,
        execute=execute_prompt,
        stream=stream_prompt,
        describe=describe_server,
        embed=embed_text,
        identify=identify_caller,
        max_body_bytes=settings.provided.server.max_message_bytes,
    )
    http_gate = providers.Factory(build_http_gate, http_services)
    http_tls = providers.Singleton(security.http_tls, settings)
    grpc_server = providers.Factory(
        build_server,
        servicer,
        min_ping_interval_s=settings.provided.server.min_ping_interval_seconds,
        max_message_bytes=settings.provided.server.max_message_bytes,
        # Tracing outermost, so that calls the other interceptors refuse are traced too; the
        # body check innermost, so that a caller without credentials learns nothing more.
        interceptors=providers.Callable(
            chain,
            providers.Callable(tracing_interceptors, tracer_provider),
            interceptors,
            providers.Callable(lambda refusals: [MalformedRequestGuard(refusals)], refusals),
        ),
        health=health,
        reflection=settings.provided.server.reflection,
        reuse_port=providers.Callable(lambda role: role != SINGLE, role),
        connections=providers.Factory(
            ConnectionLimits,
            idle_s=settings.provided.server.max_connection_idle_seconds,
            age_s=settings.provided.server.max_connection_age_seconds,
            age_grace_s=settings.provided.server.max_connection_age_grace_seconds,
            streams=settings.provided.server.max_concurrent_streams,
        ),
    )

    # Everything a SIGHUP re-applies; append more (JWT keys, say) to make them reloadable.
    reloadables = providers.List(
        providers.Singleton(CatalogReload, catalog),
        providers.Singleton(PolicyReload, policy, version),
        providers.Singleton(LogLevelReload),
        providers.Singleton(security.AuthReload, token_verifier),
        tls,
        http_tls,
    )
    reloader = providers.Singleton(Reloader, settings_loader, settings, reloadables)
