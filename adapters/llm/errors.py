"""Configuration errors of the adapter, and the mapping of llm failures onto domain errors."""

from __future__ import annotations

from typing import Any

import llm
from pydantic import ValidationError

from domain.errors import (
    InvalidRequest,
    ModelUnavailable,
    NotSupportedByModel,
    ProxyError,
    UpstreamFailure,
)

# Plugin error messages can be long (HTML error pages, dumped payloads); clients need the gist.
_MAX_DETAIL = 500


class ModelConfigError(ValueError):
    """The models section of the configuration cannot be served; the message names the key."""


def key_advice(needs_key: str | None, key_env_var: str | None) -> str:
    if not needs_key:
        return "configure the plugin's credentials on the server"
    advice = f"run `llm keys set {needs_key}` on the server"
    if key_env_var:
        advice += f" or set the {key_env_var} environment variable"
    return advice


def translate(model_id: str, error: Exception, model: Any) -> ProxyError:
    """A domain error for a failure raised by llm or a plugin while running `model`."""
    if isinstance(error, ProxyError):
        return error
    if isinstance(error, llm.NeedsKeyException):
        advice = key_advice(getattr(model, "needs_key", None), getattr(model, "key_env_var", None))
        return ModelUnavailable(
            f"model {model_id!r} has no API key on this server: {advice}, then retry",
            details=_clip(str(error)),
        )
    if isinstance(error, llm.ConversationNotSupported):
        return NotSupportedByModel(
            f"model {model_id!r} cannot continue a conversation: send one user turn"
        )
    if isinstance(error, ValidationError):
        # Only the field paths and messages: pydantic's own text would echo the input values.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'options'}: {item['msg']}"
            for item in error.errors()
        )
        return InvalidRequest(f"model {model_id!r} rejected the request: {_clip(problems)}")
    kind = type(error).__name__
    detail = _clip(str(error))
    if "Timeout" in kind:
        return UpstreamFailure(
            f"model {model_id!r} timed out upstream ({kind}: {detail}); retry later or ask for a "
            "shorter answer"
        )
    return UpstreamFailure(f"model {model_id!r} failed: {kind}: {detail}")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
