"""A caller restricted to some models learns nothing about the others."""

from __future__ import annotations

import pytest

from domain.answer import Failure
from domain.errors import UnknownModel
from domain.principal import CallContext, Principal
from tests.unit.fakes import Harness, prompt_request

RESTRICTED = CallContext(principal=Principal(subject="r", allowed_models=("small",)))


async def _refusal(harness: Harness, model: str | None, context: CallContext) -> UnknownModel:
    result = await harness.execute(prompt_request("hi", model=model), context)
    assert isinstance(result, Failure)
    assert isinstance(result.error, UnknownModel)
    return result.error


async def test_unknown_model_lists_only_names_the_caller_may_use() -> None:
    error = await _refusal(Harness(), "nope", RESTRICTED)
    assert set(error.available) == {"small", "fast"}
    assert "large" not in error.message


async def test_unrestricted_caller_sees_every_name() -> None:
    error = await _refusal(Harness(), "nope", CallContext())
    assert {"small", "large", "fast", "big"} <= set(error.available)


@pytest.mark.parametrize("hidden", ["large", "big", "echo"])
async def test_a_model_outside_the_claim_reads_exactly_like_one_that_does_not_exist(
    hidden: str,
) -> None:
    harness = Harness()
    denied = await _refusal(harness, hidden, RESTRICTED)
    unknown = await _refusal(harness, "no-such-model", RESTRICTED)

    assert denied.code == unknown.code == "MODEL_NOT_FOUND"
    assert denied.details == unknown.details
    assert denied.message == unknown.message.replace("'no-such-model'", repr(hidden))
    # Only the name the caller sent: never the model behind an alias.
    assert "large" not in denied.message.replace(repr(hidden), "")


async def test_the_default_model_is_not_named_to_a_caller_who_may_not_use_it() -> None:
    error = await _refusal(Harness(), None, RESTRICTED)
    assert "echo" not in error.message
    assert "no model was named" in error.message
    assert set(error.available) == {"small", "fast"}


def test_default_model_is_hidden_from_a_caller_who_may_not_use_it() -> None:
    harness = Harness()
    assert harness.describe(CallContext()).default_model == "echo"
    assert harness.describe(RESTRICTED).default_model == ""


async def test_a_refused_request_is_still_recorded_against_its_model() -> None:
    harness = Harness()
    await _refusal(harness, "big", RESTRICTED)
    record = harness.observer.only()
    assert record.outcome == "PERMISSION_DENIED"
    assert record.model_id == "large"


async def test_an_unknown_model_is_recorded_without_one() -> None:
    harness = Harness()
    await _refusal(harness, "nope", CallContext())
    assert harness.observer.only().model_id is None
