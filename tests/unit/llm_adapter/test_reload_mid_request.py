"""A reload that lands between a request's resolution and its model call does not change which
model runs: the model resolved travels with the request down to the gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from adapters.llm import LlmGateway, LlmModelRegistry
from application._common import PromptPipeline
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from domain.answer import Answer, StreamFinished, TextChunk
from domain.catalog import Catalog
from domain.principal import CallContext
from tests.support import scripted_models
from tests.unit.fakes import (
    FakeClock,
    FakePolicySource,
    RecordingObserver,
    SequentialIds,
    prompt_request,
    sample_policy,
)
from tests.unit.llm_adapter.conftest import MakeRegistry
from tests.unit.llm_adapter.helpers import invocation, new_probe_name, script

ALIAS = "favourite"


class ReloadRightAfterResolution:
    """The registry's catalog, with a reload applied right after a request has read it: the
    narrowest gap between resolving a model and calling it."""

    def __init__(self, registry: LlmModelRegistry) -> None:
        self._registry = registry
        self.pending: Callable[[], None] | None = None

    def current(self) -> Catalog:
        catalog = self._registry.current()
        if self.pending is not None:
            apply, self.pending = self.pending, None
            apply()
        return catalog


@pytest.fixture
def registry(make_registry: MakeRegistry) -> LlmModelRegistry:
    # "scripted" runs on a thread (sync only), "scripted-async" in the event loop: the probe
    # tells which of the two answered.
    return make_registry(aliases={ALIAS: "scripted"})


@pytest.fixture
def catalog(registry: LlmModelRegistry) -> ReloadRightAfterResolution:
    """Repoints ALIAS to "scripted-async" right after the first request has resolved it."""
    catalog = ReloadRightAfterResolution(registry)
    catalog.pending = registry.prepare_reconfigure(
        serve=None, aliases={ALIAS: "scripted-async"}, default_model=None
    )
    return catalog


@pytest.fixture
def gateway(registry: LlmModelRegistry) -> Iterator[LlmGateway]:
    gateway = LlmGateway(registry, max_threads=4)
    yield gateway
    gateway.close()


def pipeline(catalog: ReloadRightAfterResolution) -> PromptPipeline:
    return PromptPipeline(
        catalog=catalog,
        policy=FakePolicySource(sample_policy()),
        clock=FakeClock(),
        ids=SequentialIds(),
    )


async def test_a_unary_request_runs_the_model_it_resolved_across_a_reload(
    registry: LlmModelRegistry, catalog: ReloadRightAfterResolution, gateway: LlmGateway
) -> None:
    execute = ExecutePrompt(pipeline(catalog), gateway, RecordingObserver())
    probe = new_probe_name()

    result = await execute(
        prompt_request(script(chunks=["from the first"], probe=probe), model=ALIAS),
        CallContext(),
    )

    assert isinstance(result, Answer), result
    assert result.model_id == "scripted"
    assert result.text == "from the first"
    assert scripted_models.PROBES[probe].implementation == "sync"
    # The reload did apply: the next request under the alias gets the other model.
    assert catalog.pending is None
    assert registry.current().resolve(ALIAS).model_id == "scripted-async"


async def test_a_stream_runs_the_model_it_resolved_across_a_reload(
    registry: LlmModelRegistry, catalog: ReloadRightAfterResolution, gateway: LlmGateway
) -> None:
    stream = StreamPrompt(pipeline(catalog), gateway, RecordingObserver())
    probe = new_probe_name()

    opened = stream(
        prompt_request(script(chunks=["a", "b"], probe=probe), model=ALIAS), CallContext()
    )
    async with opened as events:
        received = [event async for event in events]

    assert isinstance(received[-1], StreamFinished), received
    assert received[-1].model_id == "scripted"
    assert scripted_models.PROBES[probe].implementation == "sync"
    assert registry.current().resolve(ALIAS).model_id == "scripted-async"


async def test_the_gateway_runs_the_resolved_model_without_looking_it_up_again(
    registry: LlmModelRegistry, gateway: LlmGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = registry.current().resolve(ALIAS)

    def looked_up(model_id: str) -> object:
        raise AssertionError(f"{model_id} was looked up a second time")

    monkeypatch.setattr(registry, "served_model", looked_up)
    call = replace(invocation("scripted", script(chunks=["x"])), handle=resolved.handle)
    assert (await gateway.complete(call)).text == "x"
    events = [event async for event in gateway.stream(call)]
    assert events[0] == TextChunk("x")
