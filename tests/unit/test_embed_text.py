"""The EmbedText use case with in-memory fakes: the same admission, visibility and records as
prompts."""

from __future__ import annotations

import pytest

from adapters.quota import MemoryQuotaStore
from application.admission import Admission
from application.embed import EmbedText
from domain.answer import Failure
from domain.embedding import MAX_EMBED_INPUTS, Embeddings, EmbedRequest
from domain.errors import UpstreamFailure
from domain.outcome import Method
from domain.policy import Limits
from domain.principal import CallContext, Principal
from tests.unit.fakes import FakeEmbeddings, Harness, model


def use_case(harness: Harness, gateway: FakeEmbeddings, *, admission: bool = False) -> EmbedText:
    pipeline = harness.pipeline
    if admission:
        pipeline = type(pipeline)(
            catalog=harness.catalog,
            policy=harness.policy,
            clock=harness.clock,
            ids=harness.ids,
            admission=Admission(MemoryQuotaStore(), harness.clock),
        )
    return EmbedText(pipeline, gateway, harness.observer)


async def test_texts_get_one_vector_each_by_alias_and_are_recorded() -> None:
    harness = Harness()
    gateway = FakeEmbeddings()

    result = await use_case(harness, gateway)(
        EmbedRequest(("one two", "three"), model="small"), CallContext(transport="http")
    )

    assert isinstance(result, Embeddings)
    assert result.model_id == "embed-small"
    assert result.vectors == ((7.0, 2.0), (5.0, 1.0))
    assert gateway.calls == [("embed-small", ("one two", "three"))]
    record = harness.observer.only()
    assert (record.method, record.transport, record.outcome) == (Method.UNARY, "http", "ok")
    assert record.model_id == "embed-small" and record.usage.input_tokens == 3
    assert record.request_id == result.request_id


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (EmbedRequest((), model="small"), "EMPTY_REQUEST"),
        (EmbedRequest(("x",) * (MAX_EMBED_INPUTS + 1), model="small"), "INVALID_REQUEST"),
        (EmbedRequest(("x",), model="nope"), "MODEL_NOT_FOUND"),
        (EmbedRequest(("x",)), "MODEL_NOT_FOUND"),
    ],
)
async def test_refusals_are_answered_in_band_and_recorded(
    request_: EmbedRequest, code: str
) -> None:
    harness = Harness()
    gateway = FakeEmbeddings()

    result = await use_case(harness, gateway)(request_, CallContext())

    assert isinstance(result, Failure) and result.error.code == code
    assert harness.observer.only().outcome == code
    assert gateway.calls == []


async def test_input_over_the_limit_is_refused_before_the_model() -> None:
    harness = Harness()
    harness.set_limits(Limits(max_input_length=5))
    gateway = FakeEmbeddings()

    result = await use_case(harness, gateway)(
        EmbedRequest(("abc", "defg"), model="small"), CallContext()
    )

    assert isinstance(result, Failure) and result.error.code == "INPUT_TOO_LONG"
    assert gateway.calls == []


async def test_a_model_outside_the_callers_claim_reads_as_unknown() -> None:
    harness = Harness()
    gateway = FakeEmbeddings(model("embed-small"), model("embed-large"))
    caller = CallContext(principal=Principal("bob", ("embed-small",)))

    result = await use_case(harness, gateway)(EmbedRequest(("x",), model="embed-large"), caller)

    assert isinstance(result, Failure) and result.error.code == "MODEL_NOT_FOUND"
    assert result.error.message.endswith("Available models and aliases: embed-small")
    assert harness.observer.only().outcome == "PERMISSION_DENIED"
    assert [m.model_id for m in use_case(harness, gateway).models(caller)] == ["embed-small"]


async def test_limits_apply_and_the_slot_is_given_back() -> None:
    harness = Harness()
    harness.set_limits(Limits(max_requests_per_minute=1))
    gateway = FakeEmbeddings(fail=UpstreamFailure("provider down"))
    embed = use_case(harness, gateway, admission=True)

    first = await embed(EmbedRequest(("x",), model="small"), CallContext())
    second = await embed(EmbedRequest(("x",), model="small"), CallContext())

    assert isinstance(first, Failure) and first.error.code == "UPSTREAM_ERROR"
    assert isinstance(second, Failure) and second.error.code == "RATE_LIMITED"
    assert [r.outcome for r in harness.observer.records] == ["UPSTREAM_ERROR", "RATE_LIMITED"]
    assert harness.observer.in_flight == 0
