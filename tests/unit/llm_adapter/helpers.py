"""Small builders shared by the llm adapter tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from domain.request import ModelInvocation

SCRIPTED = "tests.support.scripted_models"


def script(**spec: Any) -> str:
    return json.dumps({"script": spec})


def new_probe_name() -> str:
    return f"probe-{uuid.uuid4().hex[:8]}"


def invocation(
    model_id: str,
    *user: str,
    system: Sequence[str] = (),
    schema: Mapping[str, Any] | None = None,
) -> ModelInvocation:
    return ModelInvocation(
        model_id=model_id,
        user_fragments=tuple(user),
        system_fragments=tuple(system),
        schema=schema,
    )
