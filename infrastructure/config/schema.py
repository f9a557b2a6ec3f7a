"""marshmallow schemas: the single statement of which configuration keys exist and their rules."""

from __future__ import annotations

import os
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates,
    validates_schema,
)

from adapters.auth.keys import HMAC_ALGORITHMS, SUPPORTED_ALGORITHMS
from infrastructure.config.addresses import is_loopback
from infrastructure.config.settings import (
    AuthSettings,
    HttpSettings,
    JwtKeySettings,
    LedgerSettings,
    LimitsSettings,
    LoggingSettings,
    MetricsSettings,
    ModelsSettings,
    PriceSettings,
    QuotaLimitSettings,
    QuotaRuleSettings,
    QuotaSettings,
    ServerSettings,
    Settings,
    TlsSettings,
    TracingSettings,
)

_POSITIVE = validate.Range(min=0, min_inclusive=False)
# A default comes from the settings type itself, so each is written once.
_LIMITS = LimitsSettings()
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class _Workers(fields.Field):  # type: ignore[type-arg]
    """A positive number of processes, or "auto" for one per CPU."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return os.cpu_count() or 1
        if isinstance(value, bool):
            raise ValidationError('must be a number of processes from 1 to 256, or "auto"')
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise ValidationError(
                'must be a number of processes from 1 to 256, or "auto"'
            ) from None
        if not 1 <= count <= 256:
            raise ValidationError('must be a number of processes from 1 to 256, or "auto"')
        return count


class TlsSchema(_Strict):
    cert_file = fields.String(load_default=None, allow_none=True)
    key_file = fields.String(load_default=None, allow_none=True)
    client_ca_file = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def _complete(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("cert_file") is None) != (data.get("key_file") is None):
            raise ValidationError("cert_file and key_file must be set together", "cert_file")
        if data.get("client_ca_file") is not None and data.get("cert_file") is None:
            raise ValidationError(
                "mutual TLS needs the server's own cert_file and key_file too", "client_ca_file"
            )

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> TlsSettings:
        return TlsSettings(**data)


class ServerSchema(_Strict):
    host = fields.String(load_default="127.0.0.1", validate=validate.Length(min=1))
    port = fields.Integer(
        load_default=50051,
        strict=False,
        validate=validate.Range(min=0, max=65535, error="must be a TCP port from 0 to 65535"),
    )
    name = fields.String(load_default="llm-proxy", validate=validate.Length(min=1))
    grace_period_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=0))
    min_ping_interval_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=1))
    max_message_bytes = fields.Integer(
        load_default=16 * 1024 * 1024, validate=validate.Range(min=1024)
    )
    max_connection_idle_seconds = fields.Float(load_default=300.0, validate=_POSITIVE)
    max_connection_age_seconds = fields.Float(
        load_default=3600.0, allow_none=True, validate=_POSITIVE
    )
    max_connection_age_grace_seconds = fields.Float(
        load_default=300.0, validate=validate.Range(min=0)
    )
    max_concurrent_streams = fields.Integer(
        load_default=1000, validate=validate.Range(min=1, max=2**31 - 1)
    )
    tls = fields.Nested(TlsSchema, load_default=TlsSettings)
    allow_insecure_public = fields.Boolean(load_default=False)
    health = fields.Boolean(load_default=True)
    reflection = fields.Boolean(load_default=True)
    workers = _Workers(load_default=1)
    shutdown_delay_seconds = fields.Float(load_default=0.0, validate=validate.Range(min=0))
    reload_on_change = fields.Boolean(load_default=False)
    reload_check_seconds = fields.Float(load_default=2.0, validate=validate.Range(min=0.1))

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> ServerSettings:
        return ServerSettings(**data)


class HttpSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    host = fields.String(load_default="127.0.0.1", validate=validate.Length(min=1))
    port = fields.Integer(
        load_default=8080,
        strict=False,
        validate=validate.Range(min=0, max=65535, error="must be a TCP port from 0 to 65535"),
    )
    tls = fields.Nested(TlsSchema, load_default=None, allow_none=True)

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> HttpSettings:
        return HttpSettings(**data)


class PriceSchema(_Strict):
    input_per_million = fields.Float(required=True, validate=validate.Range(min=0))
    output_per_million = fields.Float(required=True, validate=validate.Range(min=0))

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> PriceSettings:
        return PriceSettings(**data)


class ModelsSchema(_Strict):
    serve = fields.List(
        fields.String(validate=validate.Length(min=1)), load_default=None, allow_none=True
    )
    default = fields.String(load_default=None, allow_none=True)
    aliases = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.String(validate=validate.Length(min=1)),
        load_default=dict,
    )
    prices = fields.Dict(keys=fields.String(), values=fields.Nested(PriceSchema), load_default=dict)
    plugin_modules = fields.List(fields.String(), load_default=list)
    max_threads = fields.Integer(load_default=64, validate=validate.Range(min=1, max=4096))

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> ModelsSettings:
        serve = data["serve"]
        return ModelsSettings(
            serve=tuple(serve) if serve is not None else None,
            default=data["default"],
            aliases=data["aliases"],
            prices=data["prices"],
            plugin_modules=tuple(data["plugin_modules"]),
            max_threads=data["max_threads"],
        )


class LimitsSchema(_Strict):
    max_input_length = fields.Integer(
        load_default=_LIMITS.max_input_length, allow_none=True, validate=_POSITIVE
    )
    request_timeout_seconds = fields.Float(
        load_default=_LIMITS.request_timeout_seconds, validate=_POSITIVE
    )
    max_concurrent_requests = fields.Integer(
        load_default=_LIMITS.max_concurrent_requests, allow_none=True, validate=_POSITIVE
    )
    max_concurrent_per_subject = fields.Integer(
        load_default=_LIMITS.max_concurrent_per_subject, allow_none=True, validate=_POSITIVE
    )
    max_requests_per_minute = fields.Integer(
        load_default=_LIMITS.max_requests_per_minute, allow_none=True, validate=_POSITIVE
    )
    max_attachments = fields.Integer(
        load_default=_LIMITS.max_attachments, validate=validate.Range(min=0)
    )
    max_attachment_bytes = fields.Integer(
        load_default=_LIMITS.max_attachment_bytes, validate=validate.Range(min=0)
    )
    allow_attachment_urls = fields.Boolean(load_default=_LIMITS.allow_attachment_urls)
    client_read_timeout_seconds = fields.Float(
        load_default=_LIMITS.client_read_timeout_seconds, validate=_POSITIVE
    )

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> LimitsSettings:
        return LimitsSettings(**data)


class LoggingSchema(_Strict):
    level = fields.String(load_default="INFO")
    format = fields.String(load_default="text", validate=validate.OneOf(("text", "json")))
    log_prompts = fields.Boolean(load_default=False)

    @validates("level")
    def _known_level(self, value: str, **_: Any) -> None:
        if value.upper() not in _LOG_LEVELS:
            raise ValidationError(f"must be one of {', '.join(_LOG_LEVELS)}")

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> LoggingSettings:
        return LoggingSettings(
            level=data["level"].upper(), format=data["format"], log_prompts=data["log_prompts"]
        )


class MetricsSchema(_Strict):
    enabled = fields.Boolean(load_default=False)
    host = fields.String(load_default="127.0.0.1", validate=validate.Length(min=1))
    port = fields.Integer(
        load_default=9464,
        strict=False,
        validate=validate.Range(min=0, max=65535, error="must be a TCP port from 0 to 65535"),
    )
    max_subjects = fields.Integer(load_default=100, validate=validate.Range(min=0))
    allow_public = fields.Boolean(load_default=False)

    @validates_schema
    def _guarded(self, data: dict[str, Any], **_: Any) -> None:
        host = data.get("host", "127.0.0.1")
        if data.get("enabled") and not data.get("allow_public") and not is_loopback(host):
            raise ValidationError(
                f"{host!r} is beyond loopback, and /metrics has no authentication: it names "
                "every model and caller. Bind it to 127.0.0.1, or set metrics.allow_public: "
                "true if only your scraper can reach that address",
                "host",
            )

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> MetricsSettings:
        return MetricsSettings(**data)


class _Choice(fields.String):
    """A choice that includes "none": `LLM_PROXY_…=none` arrives as null (the environment's way
    of unsetting a key), which for these fields means the choice "none"."""

    def deserialize(self, value: Any, attr: Any = None, data: Any = None, **kwargs: Any) -> Any:
        return super().deserialize("none" if value is None else value, attr, data, **kwargs)


class TracingSchema(_Strict):
    enabled = fields.Boolean(load_default=False)
    service_name = fields.String(load_default="llm-proxy", validate=validate.Length(min=1))
    exporter = _Choice(load_default="otlp", validate=validate.OneOf(("otlp", "console", "none")))
    otlp_endpoint = fields.String(load_default=None, allow_none=True)
    sample_ratio = fields.Float(load_default=1.0, validate=validate.Range(min=0, max=1))

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> TracingSettings:
        return TracingSettings(**data)


# The algorithms the verifier implements, named by the verifier itself.
_JWT_ALGORITHMS = SUPPORTED_ALGORITHMS
_HMAC = HMAC_ALGORITHMS


class JwtKeySchema(_Strict):
    algorithm = fields.String(load_default="HS256", validate=validate.OneOf(_JWT_ALGORITHMS))
    id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    secret = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    public_key = fields.String(load_default=None, allow_none=True)
    public_key_file = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def _one_key(self, data: dict[str, Any], **_: Any) -> None:
        algorithm = data.get("algorithm", "HS256")
        given = [name for name in ("secret", "public_key", "public_key_file") if data.get(name)]
        if algorithm in _HMAC and given != ["secret"]:
            raise ValidationError(
                f"{algorithm} keys need exactly a secret (or secret_file)", "secret"
            )
        if algorithm not in _HMAC and given not in (["public_key"], ["public_key_file"]):
            raise ValidationError(
                f"{algorithm} keys need exactly one of public_key or public_key_file", "public_key"
            )

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> JwtKeySettings:
        return JwtKeySettings(**data)


class AuthSchema(_Strict):
    enabled = fields.Boolean(load_default=True)
    secret = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    algorithm = fields.String(load_default="HS256", validate=validate.OneOf(_HMAC))
    keys = fields.List(fields.Nested(JwtKeySchema), load_default=list)
    auto_secret_file = fields.String(load_default=None, allow_none=True)
    issuer = fields.String(load_default=None, allow_none=True)
    audience = fields.List(
        fields.String(validate=validate.Length(min=1)), load_default=None, allow_none=True
    )
    leeway_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0, max=600))
    max_token_bytes = fields.Integer(
        load_default=4096, validate=validate.Range(min=256, max=64 * 1024)
    )
    cache_size = fields.Integer(load_default=4096, validate=validate.Range(min=0))
    cache_seconds = fields.Float(load_default=60.0, validate=validate.Range(min=0))

    @validates_schema
    def _unique_ids(self, data: dict[str, Any], **_: Any) -> None:
        ids = [key.id for key in data.get("keys", ()) if key.id is not None]
        if len(ids) != len(set(ids)):
            raise ValidationError("key ids must be unique", "keys")

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> AuthSettings:
        audience = data["audience"]
        data["keys"] = tuple(data["keys"])
        data["audience"] = tuple(audience) if audience is not None else None
        return AuthSettings(**data)


# The settings class holds the defaults; the schema reads them rather than restating them.
_LEDGER_DEFAULTS = LedgerSettings()


class LedgerSchema(_Strict):
    backend = _Choice(
        load_default="sqlite", validate=validate.OneOf(("sqlite", "postgres", "none"))
    )
    path = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1))
    postgres_dsn = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    batch_size = fields.Integer(
        load_default=_LEDGER_DEFAULTS.batch_size, validate=validate.Range(min=1, max=100_000)
    )
    flush_interval_seconds = fields.Float(
        load_default=_LEDGER_DEFAULTS.flush_interval_seconds, validate=validate.Range(0.01, 60)
    )
    max_queue = fields.Integer(load_default=100_000, validate=validate.Range(min=1))
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=100))
    close_timeout_seconds = fields.Float(load_default=10.0, validate=validate.Range(min=0))

    @validates_schema
    def _dsn_for_postgres(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("backend") == "postgres" and not data.get("postgres_dsn"):
            raise ValidationError(
                "the postgres backend needs postgres_dsn (or postgres_dsn_file), e.g. "
                "postgresql://user@host:5432/database",
                "postgres_dsn",
            )

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> LedgerSettings:
        return LedgerSettings(**data)


_COUNT = validate.Range(min=1)
_USD = validate.Range(min=0)


class QuotaLimitSchema(_Strict):
    requests_per_minute = fields.Integer(load_default=None, allow_none=True, validate=_COUNT)
    tokens_per_minute = fields.Integer(load_default=None, allow_none=True, validate=_COUNT)
    concurrent = fields.Integer(load_default=None, allow_none=True, validate=_COUNT)
    tokens_per_day = fields.Integer(load_default=None, allow_none=True, validate=_COUNT)
    usd_per_day = fields.Float(load_default=None, allow_none=True, validate=_USD)
    usd_per_month = fields.Float(load_default=None, allow_none=True, validate=_USD)

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> QuotaLimitSettings:
        return QuotaLimitSettings(**data)


class QuotaRuleSchema(QuotaLimitSchema):
    models = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.Nested(QuotaLimitSchema),
        load_default=dict,
    )

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> QuotaRuleSettings:
        models = data.pop("models")
        return QuotaRuleSettings(limits=QuotaLimitSettings(**data), models=models)


class QuotaDefaultSchema(QuotaLimitSchema):
    @validates_schema
    def _not_duplicated(self, data: dict[str, Any], **_: Any) -> None:
        for key, instead in (
            ("requests_per_minute", "limits.max_requests_per_minute"),
            ("concurrent", "limits.max_concurrent_per_subject"),
        ):
            if data.get(key) is not None:
                raise ValidationError(f"set the default in {instead} instead", key)


class QuotasSchema(_Strict):
    store = fields.String(load_default="memory", validate=validate.OneOf(("memory", "redis")))
    redis_url = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    redis_key_prefix = fields.String(load_default="llm-proxy:")
    on_store_error = fields.String(
        load_default="fail_closed", validate=validate.OneOf(("fail_closed", "fail_open"))
    )
    redis_timeout_seconds = fields.Float(load_default=0.5, validate=_POSITIVE)
    estimate_output_tokens = fields.Integer(load_default=256, validate=validate.Range(min=0))
    chars_per_token = fields.Float(load_default=4.0, validate=_POSITIVE)
    default = fields.Nested(QuotaDefaultSchema, load_default=QuotaLimitSettings)
    subjects = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.Nested(QuotaRuleSchema),
        load_default=dict,
    )
    teams = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.Nested(QuotaRuleSchema),
        load_default=dict,
    )

    @validates_schema
    def _redis_url_for_redis(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("store") == "redis" and not data.get("redis_url"):
            raise ValidationError(
                "the redis store needs redis_url (or redis_url_file), e.g. "
                "redis://127.0.0.1:6379/0",
                "redis_url",
            )

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> QuotaSettings:
        return QuotaSettings(**data)


class SettingsSchema(_Strict):
    server = fields.Nested(ServerSchema)
    http = fields.Nested(HttpSchema)
    models = fields.Nested(ModelsSchema)
    limits = fields.Nested(LimitsSchema)
    logging = fields.Nested(LoggingSchema)
    auth = fields.Nested(AuthSchema)
    metrics = fields.Nested(MetricsSchema)
    tracing = fields.Nested(TracingSchema)
    ledger = fields.Nested(LedgerSchema)
    quotas = fields.Nested(QuotasSchema)

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> Settings:
        return Settings(**data)
