"""Real llm with the installed plugins (llm-echo, llm-markov) plus the scripted test models."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from adapters.llm import LlmGateway, LlmModelRegistry
from tests.support import scripted_models
from tests.unit.llm_adapter.helpers import SCRIPTED

MakeRegistry = Callable[..., LlmModelRegistry]


@pytest.fixture(autouse=True)
def isolated_llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh llm user dir and no provider keys, so what is served depends on the test only."""
    user_dir = tmp_path / "llm-user"
    user_dir.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(user_dir))
    for var in ("OPENAI_API_KEY", "LLM_ECHO_NEEDS_KEY_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield user_dir
    # A hanging scripted model must not keep a worker thread alive past its test.
    scripted_models.release_all()


@pytest.fixture
def make_registry() -> MakeRegistry:
    def make(
        *,
        serve: Sequence[str] | None = None,
        aliases: Mapping[str, str] | None = None,
        default_model: str | None = None,
    ) -> LlmModelRegistry:
        registry = LlmModelRegistry(
            plugin_modules=[SCRIPTED], serve=serve, aliases=aliases, default_model=default_model
        )
        registry.load()
        return registry

    return make


@pytest.fixture
def registry(make_registry: MakeRegistry) -> LlmModelRegistry:
    return make_registry()


@pytest.fixture
def gateway(registry: LlmModelRegistry) -> Iterator[LlmGateway]:
    gateway = LlmGateway(registry, max_threads=8)
    yield gateway
    gateway.close()
