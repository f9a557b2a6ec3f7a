"""What llm offers: every registered model with its implementations, aliases and provider."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import llm

from adapters.llm.errors import ModelConfigError
from domain.value import value_object

# llm leaves this untyped; the annotation is what the proxy relies on.
_llm_plugins: Callable[[], list[dict[str, object]]] = llm.get_plugins


@value_object
class DiscoveredModel:
    model_id: str
    sync_model: Any
    async_model: Any
    llm_aliases: tuple[str, ...]
    provider: str

    @property
    def preferred(self) -> Any:
        """The implementation the proxy runs: async when there is one, as it needs no thread."""
        return self.async_model if self.async_model is not None else self.sync_model

    @property
    def needs_key(self) -> str | None:
        return getattr(self.preferred, "needs_key", None)

    @property
    def key_env_var(self) -> str | None:
        return getattr(self.preferred, "key_env_var", None)

    def key_available(self) -> bool:
        if not self.needs_key:
            return True
        if getattr(self.preferred, "key", None):
            return True
        return bool(llm.get_key(alias=self.needs_key, env=self.key_env_var))

    def display_name(self) -> str:
        return str(self.sync_model if self.sync_model is not None else self.async_model)


def register_plugin_modules(names: Sequence[str]) -> None:
    """Import extra plugin modules and add them to llm's plugin manager, once each."""
    for index, name in enumerate(names):
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ModelConfigError(
                f"models.plugin_modules[{index}]: cannot import {name!r} "
                f"({type(exc).__name__}: {exc}); install it or fix the module path"
            ) from exc
        if llm.plugins.pm.is_registered(module) or llm.plugins.pm.get_plugin(name) is not None:
            continue
        llm.plugins.pm.register(module, name=name)


def installed_plugins() -> tuple[str, ...]:
    """Names of the llm plugins this environment has, as `llm plugins` shows them."""
    llm.get_models()  # loads the entry-point plugins, which get_plugins alone does not
    return tuple(sorted(str(plugin["name"]) for plugin in _llm_plugins()))


def discover() -> tuple[DiscoveredModel, ...]:
    """Ask llm's plugins for their models. Slow-ish (imports, aliases.json): call once."""
    plugin_modules = sorted(
        (plugin.__name__ for plugin in llm.plugins.pm.get_plugins() if hasattr(plugin, "__name__")),
        key=len,
        reverse=True,
    )
    found: dict[str, DiscoveredModel] = {}
    for entry in llm.get_models_with_aliases():
        implementation = entry.model if entry.model is not None else entry.async_model
        if implementation is None:
            continue
        model_id = str(implementation.model_id)
        if model_id in found:
            # llm itself resolves a duplicate id to the first registration seen by get_model.
            continue
        found[model_id] = DiscoveredModel(
            model_id=model_id,
            sync_model=entry.model,
            async_model=entry.async_model,
            llm_aliases=tuple(str(alias) for alias in entry.aliases),
            provider=provider_of(type(implementation).__module__, plugin_modules),
        )
    return tuple(found.values())


def provider_of(class_module: str, plugin_modules: Sequence[str]) -> str:
    """A short provider name from the plugin module that defines the model class.

    `llm_echo` gives "echo", `llm.default_plugins.openai_models` gives "openai",
    `tests.support.scripted_models` gives "scripted": the plugin's last dotted name without
    the conventional `llm_` prefix and `_models` suffix.
    """
    owner = next(
        (
            module
            for module in plugin_modules
            if class_module == module or class_module.startswith(module + ".")
        ),
        class_module,
    )
    name = owner.rsplit(".", 1)[-1]
    for prefix in ("llm_", "llm-"):
        name = name.removeprefix(prefix)
    for suffix in ("_models", "_model"):
        name = name.removesuffix(suffix)
    return name.replace("_", "-") or owner
