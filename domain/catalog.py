"""Served models, aliases and the rules that turn a requested name into one model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType

from domain.errors import UnknownModel
from domain.value import value_object


@value_object
class OptionSpec:
    """One option a model accepts, as its plugin declares it."""

    name: str
    # JSON Schema type names, e.g. "number" or "integer|null"; "" when the plugin says nothing.
    type: str = ""
    description: str = ""
    # The option's own JSON Schema as JSON text (bounds, enums, defaults), for clients that
    # build forms or validate before sending.
    json_schema: str = "{}"


@value_object
class ModelDescription:
    model_id: str
    provider: str
    supports_streaming: bool
    display_name: str = ""
    aliases: tuple[str, ...] = ()
    max_context_length: int | None = None
    supports_schema: bool = False
    supports_tools: bool = False
    # Media types the model accepts as attachments; empty when it takes none.
    attachment_types: tuple[str, ...] = ()
    supports_conversation: bool = True
    # Whether the model has a native async implementation (no worker thread per call).
    supports_async: bool = False
    options: tuple[OptionSpec, ...] = ()
    # What the adapter that built the catalog runs the model with, opaque here. It travels
    # with the request (ModelInvocation.handle), so the model a request was resolved to is
    # the one that runs: no second lookup, which a reload could slip in front of.
    handle: object = field(default=None, compare=False, repr=False)

    def option_names(self) -> tuple[str, ...]:
        return tuple(option.name for option in self.options)


def _freeze(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@value_object
class Catalog:
    """An immutable snapshot of what is served; swapping the snapshot is how config reloads."""

    models: tuple[ModelDescription, ...]
    default_model: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    _by_id: Mapping[str, ModelDescription] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {model.model_id: model for model in self.models}
        object.__setattr__(self, "_by_id", _freeze_models(by_id))
        object.__setattr__(self, "aliases", _freeze(self.aliases))
        dangling = sorted(alias for alias, target in self.aliases.items() if target not in by_id)
        if dangling:
            raise ValueError(f"aliases point at models that are not served: {dangling}")
        if self.models and self.default_model not in by_id:
            raise ValueError(f"default model {self.default_model!r} is not served")

    def resolve(self, requested: str | None) -> ModelDescription:
        model = self.find(requested)
        if model is None:
            raise UnknownModel(requested_name(requested) or self.default_model, self.names())
        return model

    def find(self, requested: str | None) -> ModelDescription | None:
        """The model a requested id or alias names (the default model for none), if served."""
        name = requested_name(requested) or self.default_model
        model = self._by_id.get(name)
        if model is None:
            target = self.aliases.get(name)
            model = self._by_id.get(target) if target is not None else None
        return model

    def names(self) -> tuple[str, ...]:
        """Every name a client may use: model ids, then aliases."""
        return tuple(sorted(self._by_id)) + tuple(sorted(self.aliases))

    def get(self, model_id: str) -> ModelDescription | None:
        return self._by_id.get(model_id)


def requested_name(requested: str | None) -> str | None:
    """The name a client asked for; None when it named none and so gets the default."""
    return (requested or "").strip() or None


def _freeze_models(by_id: dict[str, ModelDescription]) -> Mapping[str, ModelDescription]:
    return MappingProxyType(by_id)
