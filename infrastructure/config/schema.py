"""marshmallow schemas: the single statement of which configuration keys exist and their rules."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates

from infrastructure.config.settings import (
    LimitsSettings,
    LoggingSettings,
    ModelsSettings,
    PriceSettings,
    ServerSettings,
    Settings,
)

_POSITIVE = validate.Range(min=0, min_inclusive=False)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


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

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> ServerSettings:
        return ServerSettings(**data)


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
    max_input_length = fields.Integer(load_default=1_000_000, allow_none=True, validate=_POSITIVE)
    request_timeout_seconds = fields.Float(load_default=300.0, validate=_POSITIVE)
    max_concurrent_requests = fields.Integer(load_default=None, allow_none=True, validate=_POSITIVE)
    max_requests_per_minute = fields.Integer(load_default=None, allow_none=True, validate=_POSITIVE)

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


class SettingsSchema(_Strict):
    server = fields.Nested(ServerSchema)
    models = fields.Nested(ModelsSchema)
    limits = fields.Nested(LimitsSchema)
    logging = fields.Nested(LoggingSchema)

    @post_load
    def build(self, data: dict[str, Any], **_: Any) -> Settings:
        return Settings(**data)
