"""Turns discovered models plus the operator's choices into an immutable served snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from fnmatch import fnmatchcase
from types import MappingProxyType

from adapters.llm.discovery import DiscoveredModel
from adapters.llm.errors import ModelConfigError, key_advice
from adapters.llm.options import describe_options
from domain.catalog import Catalog, ModelDescription
from domain.value import value_object

_GLOB_CHARS = frozenset("*?[")
# Plugins such as the OpenAI one register dozens of models; a message should stay readable.
_MAX_LISTED = 25


@value_object
class Snapshot:
    catalog: Catalog
    served: Mapping[str, DiscoveredModel]


def build_snapshot(
    discovered: Sequence[DiscoveredModel],
    *,
    serve: Sequence[str] | None,
    aliases: Mapping[str, str] | None,
    default_model: str | None,
    llm_default: str | None,
) -> Snapshot:
    by_id = {model.model_id: model for model in discovered}
    llm_aliases = _llm_alias_map(discovered)
    served_ids = _select(by_id, llm_aliases, serve)
    alias_map = _aliases(by_id, served_ids, llm_aliases, aliases or {})
    default = _default(served_ids, alias_map, default_model, llm_default)

    pointing: dict[str, list[str]] = {model_id: [] for model_id in served_ids}
    for alias, target in alias_map.items():
        pointing[target].append(alias)
    descriptions = tuple(
        _describe(by_id[model_id], tuple(sorted(pointing[model_id])))
        for model_id in sorted(served_ids)
    )
    return Snapshot(
        catalog=Catalog(models=descriptions, default_model=default, aliases=alias_map),
        served=MappingProxyType({model_id: by_id[model_id] for model_id in sorted(served_ids)}),
    )


def _llm_alias_map(discovered: Sequence[DiscoveredModel]) -> dict[str, str]:
    ids = {model.model_id for model in discovered}
    mapping: dict[str, str] = {}
    for model in discovered:
        for alias in model.llm_aliases:
            # A model id always beats an alias of the same name, as it does in llm.
            if alias not in ids:
                mapping.setdefault(alias, model.model_id)
    return mapping


def _select(
    by_id: Mapping[str, DiscoveredModel],
    llm_aliases: Mapping[str, str],
    serve: Sequence[str] | None,
) -> set[str]:
    if serve is None:
        chosen = {model_id for model_id, model in by_id.items() if model.key_available()}
        if not chosen:
            raise ModelConfigError(
                "models.serve: no model llm knows is usable without an API key "
                f"(known: {_listing(by_id)}); set a key or list models explicitly"
            )
        return chosen
    chosen = set()
    for index, entry in enumerate(serve):
        key = f"models.serve[{index}]"
        if _is_glob(entry):
            chosen |= _glob_matches(key, entry, by_id)
            continue
        model_id = entry if entry in by_id else llm_aliases.get(entry)
        if model_id is None:
            raise ModelConfigError(
                f"{key}: {entry!r} is not a model llm knows{_did_you_mean(entry, by_id)}; "
                f"known: {_listing(by_id)}. Install the plugin that provides it or fix the name"
            )
        # Named explicitly: served even without a key, so calls explain how to add one.
        chosen.add(model_id)
    if not chosen:
        raise ModelConfigError("models.serve: the list is empty; remove it to serve every model")
    return chosen


def _glob_matches(key: str, pattern: str, by_id: Mapping[str, DiscoveredModel]) -> set[str]:
    matches = [model for model_id, model in by_id.items() if fnmatchcase(model_id, pattern)]
    usable = {model.model_id for model in matches if model.key_available()}
    if usable:
        return usable
    if matches:
        needing = "; ".join(
            f"{model.model_id} ({key_advice(model.needs_key, model.key_env_var)})"
            for model in sorted(matches, key=lambda model: model.model_id)
        )
        raise ModelConfigError(
            f"{key}: {pattern!r} matches only models without an API key: {needing}; "
            "or name a model explicitly to serve it anyway"
        )
    raise ModelConfigError(
        f"{key}: {pattern!r} matches no model llm knows; known: {_listing(by_id)}"
    )


def _aliases(
    by_id: Mapping[str, DiscoveredModel],
    served_ids: set[str],
    llm_aliases: Mapping[str, str],
    configured: Mapping[str, str],
) -> dict[str, str]:
    alias_map = {alias: target for alias, target in llm_aliases.items() if target in served_ids}
    served_llm_aliases = dict(alias_map)
    for alias, target in configured.items():
        key = f"models.aliases.{alias}"
        if not alias.strip():
            raise ModelConfigError(f"{key}: an alias name must not be blank")
        if alias in by_id:
            raise ModelConfigError(
                f"{key}: {alias!r} is already the id of a model; choose another alias name"
            )
        target_id = target if target in served_ids else served_llm_aliases.get(target)
        if target_id is None:
            raise ModelConfigError(
                f"{key}: points at {target!r}, which is not served; served: "
                f"{', '.join(sorted(served_ids))}"
            )
        alias_map[alias] = target_id
    return alias_map


def _default(
    served_ids: set[str],
    alias_map: Mapping[str, str],
    configured: str | None,
    llm_default: str | None,
) -> str:
    if configured is not None:
        model_id = configured if configured in served_ids else alias_map.get(configured)
        if model_id is None:
            raise ModelConfigError(
                f"models.default: {configured!r} is not served; served: "
                f"{', '.join(sorted(served_ids))}"
            )
        return model_id
    if llm_default:
        model_id = llm_default if llm_default in served_ids else alias_map.get(llm_default)
        if model_id is not None:
            return model_id
    return min(served_ids)


def _describe(model: DiscoveredModel, aliases: tuple[str, ...]) -> ModelDescription:
    implementation = model.preferred
    return ModelDescription(
        model_id=model.model_id,
        provider=model.provider,
        supports_streaming=bool(getattr(implementation, "can_stream", False)),
        display_name=model.display_name(),
        aliases=aliases,
        supports_schema=bool(getattr(implementation, "supports_schema", False)),
        supports_tools=bool(getattr(implementation, "supports_tools", False)),
        attachment_types=tuple(
            sorted(str(kind).lower() for kind in getattr(implementation, "attachment_types", ()))
        ),
        supports_conversation=bool(getattr(implementation, "supports_conversation", True)),
        supports_async=model.async_model is not None,
        options=describe_options(implementation),
        handle=model,
    )


def _is_glob(entry: str) -> bool:
    return any(char in _GLOB_CHARS for char in entry)


def _listing(by_id: Mapping[str, DiscoveredModel]) -> str:
    names = sorted(by_id)
    if not names:
        return "(none: is any llm plugin installed?)"
    shown = ", ".join(names[:_MAX_LISTED])
    hidden = len(names) - _MAX_LISTED
    return f"{shown} and {hidden} more (see `llm models`)" if hidden > 0 else shown


def _did_you_mean(name: str, by_id: Mapping[str, DiscoveredModel]) -> str:
    close = get_close_matches(name, list(by_id), n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
