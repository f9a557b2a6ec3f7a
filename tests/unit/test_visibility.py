"""A caller restricted to some models learns nothing about the others."""

from __future__ import annotations

from domain.answer import Failure
from domain.errors import UnknownModel
from domain.principal import CallContext, Principal
from domain.request import PromptRequest
from tests.unit.fakes import Harness

RESTRICTED = CallContext(principal=Principal(subject="r", allowed_models=("small",)))


async def test_unknown_model_lists_only_names_the_caller_may_use() -> None:
    harness = Harness()
    harness.script("x")
    result = await harness.execute(PromptRequest(user_fragments=("hi",), model="nope"), RESTRICTED)
    assert isinstance(result, Failure)
    assert isinstance(result.error, UnknownModel)
    assert set(result.error.available) == {"small", "fast"}
    assert "large" not in result.error.message


async def test_unrestricted_caller_sees_every_name() -> None:
    harness = Harness()
    result = await harness.execute(
        PromptRequest(user_fragments=("hi",), model="nope"), CallContext()
    )
    assert isinstance(result, Failure)
    assert isinstance(result.error, UnknownModel)
    assert {"small", "large", "fast", "big"} <= set(result.error.available)


def test_default_model_is_hidden_from_a_caller_who_may_not_use_it() -> None:
    harness = Harness()
    assert harness.describe(CallContext()).default_model == "echo"
    assert harness.describe(RESTRICTED).default_model == ""


async def test_a_refused_request_is_still_recorded_against_its_model() -> None:
    harness = Harness()
    result = await harness.execute(PromptRequest(user_fragments=("hi",), model="big"), RESTRICTED)
    assert isinstance(result, Failure)
    record = harness.observer.only()
    assert record.outcome == "PERMISSION_DENIED"
    assert record.model_id == "large"


async def test_an_unknown_model_is_recorded_without_one() -> None:
    harness = Harness()
    await harness.execute(PromptRequest(user_fragments=("hi",), model="nope"), CallContext())
    assert harness.observer.only().model_id is None
