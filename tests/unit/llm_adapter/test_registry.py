"""LlmModelRegistry: discovery, the served allow-list, aliases, default model, reconfigure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import llm
import pytest

from adapters.llm import LlmModelRegistry, ModelConfigError
from adapters.llm.discovery import provider_of
from domain.catalog import ModelDescription
from tests.unit.llm_adapter.conftest import MakeRegistry
from tests.unit.llm_adapter.helpers import SCRIPTED

OFFLINE = {"echo", "markov", "scripted", "scripted-async"}


def served_ids(registry: LlmModelRegistry) -> set[str]:
    return {model.model_id for model in registry.current().models}


def test_serves_every_usable_model_by_default(registry: LlmModelRegistry) -> None:
    ids = served_ids(registry)
    assert ids >= OFFLINE
    # Key-needing models stay out when no key is configured: the OpenAI ones and llm-echo's.
    assert "echo-needs-key" not in ids
    assert not any(model_id.startswith("gpt-") for model_id in ids)


def described(registry: LlmModelRegistry, model_id: str) -> ModelDescription:
    description = registry.current().get(model_id)
    assert description is not None, f"{model_id} is not served"
    return description


def test_describes_models_from_their_plugins(registry: LlmModelRegistry) -> None:
    echo, markov, scripted = (described(registry, name) for name in ("echo", "markov", "scripted"))
    assert (echo.provider, markov.provider, scripted.provider) == ("echo", "markov", "scripted")
    assert markov.display_name == "Markov: markov"
    assert (scripted.supports_schema, echo.supports_schema, markov.supports_schema) == (
        True,
        False,
        False,
    )
    assert (echo.supports_streaming, markov.supports_streaming) == (True, True)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("llm_echo", "echo"),
        ("llm.default_plugins.openai_models", "openai"),
        ("tests.support.scripted_models", "scripted"),
        ("llm_mlx.models", "mlx"),
        ("some_plugin", "some-plugin"),
    ],
)
def test_provider_comes_from_the_registering_plugin(module: str, expected: str) -> None:
    plugins = ["llm_echo", "llm.default_plugins.openai_models", "llm_mlx", SCRIPTED]
    assert provider_of(module, plugins) == expected


def test_key_in_the_environment_makes_a_model_usable(
    make_registry: MakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_ECHO_NEEDS_KEY_KEY", "sk-test")
    assert "echo-needs-key" in served_ids(make_registry())


def test_key_stored_with_llm_keys_makes_a_model_usable(
    make_registry: MakeRegistry, isolated_llm: Path
) -> None:
    (isolated_llm / "keys.json").write_text(json.dumps({"echo-needs-key": "sk-test"}))
    assert "echo-needs-key" in served_ids(make_registry())


def test_a_model_named_explicitly_is_served_without_its_key(make_registry: MakeRegistry) -> None:
    registry = make_registry(serve=["echo-needs-key", "echo"])
    assert served_ids(registry) == {"echo-needs-key", "echo"}


@pytest.mark.parametrize(
    ("serve", "expected"),
    [
        (["scripted*"], {"scripted", "scripted-async"}),
        (["echo*"], {"echo"}),  # the glob does not drag in the keyless echo-needs-key
        (["mark?v", "echo"], {"markov", "echo"}),
        (["scripted-a"], {"scripted-async"}),  # an llm alias names its model
    ],
)
def test_allow_list_takes_ids_globs_and_llm_aliases(
    make_registry: MakeRegistry, serve: list[str], expected: set[str]
) -> None:
    assert served_ids(make_registry(serve=serve)) == expected


def test_a_pattern_matching_nothing_is_a_config_error(make_registry: MakeRegistry) -> None:
    with pytest.raises(ModelConfigError, match=r"^models\.serve\[1\]: 'claude-\*' matches no"):
        make_registry(serve=["echo", "claude-*"])


def test_a_pattern_matching_only_keyless_models_says_how_to_add_a_key(
    make_registry: MakeRegistry,
) -> None:
    with pytest.raises(ModelConfigError) as raised:
        make_registry(serve=["echo-needs-*"])
    message = str(raised.value)
    assert message.startswith("models.serve[0]:")
    assert "llm keys set echo-needs-key" in message
    assert "LLM_ECHO_NEEDS_KEY_KEY" in message


def test_an_unknown_model_name_is_a_config_error(make_registry: MakeRegistry) -> None:
    with pytest.raises(ModelConfigError) as raised:
        make_registry(serve=["echo", "makrov"])
    message = str(raised.value)
    assert message.startswith("models.serve[1]: 'makrov' is not a model llm knows")
    assert "did you mean 'markov'" in message


def test_an_empty_allow_list_is_a_config_error(make_registry: MakeRegistry) -> None:
    with pytest.raises(ModelConfigError, match=r"^models\.serve: "):
        make_registry(serve=[])


def test_llm_aliases_follow_their_model_in_and_out(make_registry: MakeRegistry) -> None:
    assert make_registry().current().aliases["scripted-a"] == "scripted-async"
    assert "scripted-a" not in make_registry(serve=["scripted"]).current().aliases


def test_aliases_from_llm_aliases_json_are_served(
    make_registry: MakeRegistry, isolated_llm: Path
) -> None:
    (isolated_llm / "aliases.json").write_text(json.dumps({"chain": "markov"}))
    registry = make_registry()
    assert registry.current().aliases["chain"] == "markov"
    assert described(registry, "markov").aliases == ("chain",)


def test_configured_aliases_win_over_llm_aliases(make_registry: MakeRegistry) -> None:
    registry = make_registry(aliases={"scripted-a": "scripted", "fast": "scripted-a"})
    catalog = registry.current()
    assert catalog.aliases["scripted-a"] == "scripted"
    # An alias may point at another (llm) alias; it is stored against the model id.
    assert catalog.aliases["fast"] == "scripted-async"
    assert catalog.resolve("fast").model_id == "scripted-async"
    assert described(registry, "scripted").aliases == ("scripted-a",)


def test_an_alias_to_an_unserved_model_is_a_config_error(make_registry: MakeRegistry) -> None:
    with pytest.raises(ModelConfigError) as raised:
        make_registry(serve=["echo", "markov"], aliases={"fast": "gpt-x"})
    assert str(raised.value) == (
        "models.aliases.fast: points at 'gpt-x', which is not served; served: echo, markov"
    )


def test_an_alias_may_not_reuse_a_model_id(make_registry: MakeRegistry) -> None:
    with pytest.raises(ModelConfigError, match=r"^models\.aliases\.markov: 'markov' is already"):
        make_registry(aliases={"markov": "echo"})


def test_configured_default_model_may_be_an_alias(make_registry: MakeRegistry) -> None:
    assert make_registry(default_model="markov").current().default_model == "markov"
    assert make_registry(default_model="scripted-a").current().default_model == "scripted-async"


def test_an_unserved_default_model_is_a_config_error(make_registry: MakeRegistry) -> None:
    with pytest.raises(ModelConfigError) as raised:
        make_registry(serve=["scripted*"], default_model="markov")
    assert str(raised.value) == (
        "models.default: 'markov' is not served; served: scripted, scripted-async"
    )


def test_llm_default_model_is_used_when_served(
    make_registry: MakeRegistry, isolated_llm: Path
) -> None:
    # What `llm models default scripted-async` writes.
    (isolated_llm / "default_model.txt").write_text("scripted-async")
    assert make_registry().current().default_model == "scripted-async"


def test_first_served_id_is_the_default_when_llm_default_is_not_served(
    make_registry: MakeRegistry, isolated_llm: Path
) -> None:
    # llm's built-in default is an OpenAI model, not served without a key.
    assert make_registry(serve=["scripted*", "markov"]).current().default_model == "markov"
    (isolated_llm / "default_model.txt").write_text("echo")
    assert make_registry(serve=["scripted*"]).current().default_model == "scripted"


def test_current_is_one_immutable_snapshot(registry: LlmModelRegistry) -> None:
    assert registry.current() is registry.current()


def test_load_discovers_once_and_reconfigure_does_not_rediscover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    original = llm.get_models_with_aliases

    def counting() -> Any:
        calls.append(1)
        return original()

    monkeypatch.setattr(llm, "get_models_with_aliases", counting)
    registry = LlmModelRegistry(plugin_modules=[SCRIPTED])
    registry.load()
    registry.prepare_reconfigure(serve=["markov"], aliases={"m": "markov"}, default_model=None)()
    assert len(calls) == 1
    assert served_ids(registry) == {"markov"}
    assert registry.current().resolve("m").model_id == "markov"


def test_failed_reconfigure_keeps_the_old_snapshot(make_registry: MakeRegistry) -> None:
    registry = make_registry(serve=["echo", "markov"], default_model="echo")
    before = registry.current()
    with pytest.raises(ModelConfigError, match=r"^models\.aliases\.x:"):
        registry.prepare_reconfigure(serve=["markov"], aliases={"x": "echo"}, default_model=None)()
    assert registry.current() is before
    # ...and the rejected settings are not half-applied to the next reconfigure.
    registry.prepare_reconfigure(serve=["markov"], aliases=None, default_model=None)()
    assert served_ids(registry) == {"markov"}
    assert registry.current().default_model == "markov"


def test_reconfigure_before_load_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before load"):
        LlmModelRegistry().prepare_reconfigure(serve=None, aliases=None, default_model=None)


def test_a_plugin_module_that_cannot_be_imported_is_a_config_error() -> None:
    registry = LlmModelRegistry(plugin_modules=[SCRIPTED, "tests.support.no_such_plugin"])
    with pytest.raises(ModelConfigError, match=r"^models\.plugin_modules\[1\]: cannot import"):
        registry.load()


def test_plugin_modules_are_registered_once(make_registry: MakeRegistry) -> None:
    make_registry()
    make_registry()
    names = [llm.plugins.pm.get_name(plugin) for plugin in llm.plugins.pm.get_plugins()]
    assert names.count(SCRIPTED) == 1
