"""Typed, frozen settings: what the rest of the program reads after validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from domain.policy import Limits
from domain.quota import LimitSet


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class TlsSettings:
    # PEM files; TLS is on when both are set. Re-read on SIGHUP for new connections.
    cert_file: str | None = None
    key_file: str | None = None
    # Mutual TLS: clients must present a certificate signed by one of these CAs.
    client_ca_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 50051
    name: str = "llm-proxy"
    grace_period_seconds: float = 10.0
    # Clients (vibectl's among them) ping every 30 s even when idle; allow that and faster.
    min_ping_interval_seconds: float = 10.0
    max_message_bytes: int = 16 * 1024 * 1024
    # A connection without a call in progress for this long is closed (GOAWAY); each open
    # connection holds a file descriptor, so idle ones must not pile up.
    max_connection_idle_seconds: float = 300.0
    # Busy connections are asked to reconnect after this long (None: never), which also
    # spreads long-lived clients over replicas; their calls in flight get the grace period.
    max_connection_age_seconds: float | None = 3600.0
    max_connection_age_grace_seconds: float = 300.0
    # Streams open at once per connection; a client past it queues its calls. Bounds what a
    # rapid reset (HEADERS + RST_STREAM by the thousand) can make the server hold.
    max_concurrent_streams: int = 1000
    tls: TlsSettings = TlsSettings()
    # Listening beyond loopback with neither JWT nor mTLS is refused unless this is set.
    allow_insecure_public: bool = False
    # The standard grpc.health.v1 service, and reflection for grpcurl-style tools.
    health: bool = True
    reflection: bool = True
    # Server processes sharing the port (SO_REUSEPORT) under one supervisor.
    workers: int = 1
    # Kept NOT_SERVING but still answering this long before draining, so that load balancers
    # that poll health stop sending new calls first.
    shutdown_delay_seconds: float = 0.0
    # Re-read the configuration file when it changes, as SIGHUP does.
    reload_on_change: bool = False
    reload_check_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The OpenAI-compatible HTTP API, served beside gRPC by the same process."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    # None: the same certificate (and client CA) as server.tls.
    tls: TlsSettings | None = None

    def tls_for(self, server: ServerSettings) -> TlsSettings:
        return self.tls if self.tls is not None else server.tls


@dataclass(frozen=True, slots=True)
class PriceSettings:
    input_per_million: float
    output_per_million: float


@dataclass(frozen=True, slots=True)
class ModelsSettings:
    # Model ids or glob patterns; None serves every model llm knows and has keys for.
    serve: tuple[str, ...] | None = None
    default: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, PriceSettings] = field(default_factory=dict)
    # Extra llm plugin modules (dotted names) to register besides the installed ones.
    plugin_modules: tuple[str, ...] = ()
    # Threads for models that only have a blocking implementation.
    max_threads: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", _frozen(self.aliases))
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))


# The limits section is the domain's own Limits, so its defaults (and their reasons) are
# written once, where the rules that use them live.
LimitsSettings = Limits


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "text"
    # Prompt and answer text stay out of logs unless an operator asks for them.
    log_prompts: bool = False


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = False
    # Loopback by default: metrics name models and callers, which is not for everyone.
    host: str = "127.0.0.1"
    port: int = 9464
    # Callers beyond this many distinct subjects are counted together as subject="other".
    max_subjects: int = 100
    # /metrics has no authentication: a host beyond loopback is refused unless this is set.
    allow_public: bool = False


@dataclass(frozen=True, slots=True)
class TracingSettings:
    enabled: bool = False
    service_name: str = "llm-proxy"
    # otlp (needs opentelemetry-exporter-otlp-proto-grpc), console, or none.
    exporter: str = "otlp"
    # None: the OTEL_EXPORTER_OTLP_ENDPOINT environment variable or the exporter's default.
    otlp_endpoint: str | None = None
    # Share of new traces recorded; a caller's sampled trace is always continued.
    sample_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class JwtKeySettings:
    """One verification key. `id` matches a token's `kid` header; tokens without one are tried
    against every key of their algorithm."""

    algorithm: str = "HS256"
    id: str | None = None
    secret: str | None = None
    public_key: str | None = None
    public_key_file: str | None = None


@dataclass(frozen=True, slots=True)
class AuthSettings:
    enabled: bool = True
    # The simple setup: one shared HMAC secret (also auth.secret_file or the environment).
    secret: str | None = None
    algorithm: str = "HS256"
    # More keys, for asymmetric algorithms and for rotation without downtime.
    keys: tuple[JwtKeySettings, ...] = ()
    # With no secret and no keys, serve generates one here; None: the user's config directory.
    auto_secret_file: str | None = None
    issuer: str | None = None
    # Accepted `aud` values; None means tokens must not be restricted to an audience.
    audience: tuple[str, ...] | None = None
    leeway_seconds: float = 30.0
    max_token_bytes: int = 4096
    cache_size: int = 4096
    cache_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """The usage ledger: one row per finished request, kept durably."""

    # sqlite (embedded, the default), postgres (several replicas), or none.
    backend: str = "sqlite"
    # The SQLite file; None: usage.sqlite3 in the user's data directory (XDG_DATA_HOME).
    path: str | None = None
    # postgresql://user:password@host:port/database (a secret: also postgres_dsn_file).
    postgres_dsn: str | None = None
    # Rows are written in batches of up to this many, at least every flush_interval_seconds.
    # Fewer, larger SQLite transactions: with batches of 500 every 0.5 s the writer thread
    # cost the server 26 µs of CPU per request at c=16; with these, 4.5 µs. A crash (not a
    # SIGTERM, which drains) can lose what was queued, at most one interval's worth.
    batch_size: int = 2000
    flush_interval_seconds: float = 1.0
    # Rows waiting beyond this many are dropped (counted and logged), never waited for.
    max_queue: int = 100_000
    # Tries per batch before its rows are dropped.
    max_attempts: int = 5
    # How long shutdown waits for queued rows to be written.
    close_timeout_seconds: float = 10.0


# One rule's limits are the domain's LimitSet, as the limits section is its Limits.
QuotaLimitSettings = LimitSet


@dataclass(frozen=True, slots=True)
class QuotaRuleSettings:
    limits: QuotaLimitSettings = QuotaLimitSettings()
    # Model glob -> limits counted over the matching models only.
    models: Mapping[str, QuotaLimitSettings] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """Per-caller and per-team quotas and budgets, and where their counters live."""

    # memory: this process (under --workers: the supervisor, shared by its workers);
    # redis: shared by every process and replica using the same Redis.
    store: str = "memory"
    # redis://[:password@]host:port/db (a secret: also redis_url_file).
    redis_url: str | None = None
    redis_key_prefix: str = "llm-proxy:"
    # When the store cannot be reached: refuse (fail_closed) or admit unchecked (fail_open).
    on_store_error: str = "fail_closed"
    redis_timeout_seconds: float = 0.5
    estimate_output_tokens: int = 256
    chars_per_token: float = 4.0
    # Per subject for the kinds no subject rule sets (requests per minute and concurrency
    # come from limits.max_requests_per_minute and limits.max_concurrent_per_subject).
    default: QuotaLimitSettings = QuotaLimitSettings()
    # Subject or team name (exact or glob) -> rule, in order.
    subjects: Mapping[str, QuotaRuleSettings] = field(default_factory=dict)
    teams: Mapping[str, QuotaRuleSettings] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = ServerSettings()
    http: HttpSettings = HttpSettings()
    models: ModelsSettings = ModelsSettings()
    limits: LimitsSettings = LimitsSettings()
    logging: LoggingSettings = LoggingSettings()
    auth: AuthSettings = AuthSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    ledger: LedgerSettings = LedgerSettings()
    quotas: QuotaSettings = QuotaSettings()
