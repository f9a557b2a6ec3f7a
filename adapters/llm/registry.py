"""The served-model catalog, built once from llm's plugins and swapped whole on reconfigure."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import llm

from adapters.llm import deferred
from adapters.llm.discovery import DiscoveredModel, discover, register_plugin_modules
from adapters.llm.selection import Snapshot, build_snapshot
from domain.catalog import Catalog
from domain.errors import UnknownModel

# llm leaves this untyped; the annotation is what the proxy relies on.
_llm_default_model: Callable[[], str | None] = llm.get_default_model


class LlmModelRegistry:
    """Implements application.ports.ModelCatalog for everything llm can reach."""

    def __init__(
        self,
        *,
        plugin_modules: Sequence[str] = (),
        serve: Sequence[str] | None = None,
        aliases: Mapping[str, str] | None = None,
        default_model: str | None = None,
    ) -> None:
        self._plugin_modules = tuple(plugin_modules)
        self._serve = tuple(serve) if serve is not None else None
        self._aliases = dict(aliases or {})
        self._default_model = default_model
        self._discovered: tuple[DiscoveredModel, ...] | None = None
        self._offered: Mapping[str, DiscoveredModel] = {}
        self._snapshot: Snapshot | None = None
        # Serialises rebuilds only; readers take the current reference without locking.
        self._rebuild = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._snapshot is not None

    def load(self) -> None:
        with self._rebuild:
            # Before any plugin loads: SDKs no served model uses are then never imported.
            deferred.defer()
            register_plugin_modules(self._plugin_modules)
            discovered = discover()
            snapshot = self._build(discovered, self._serve, self._aliases, self._default_model)
            _import_what_serving_needs(snapshot)
            self._snapshot = snapshot
            self._discovered = discovered
            self._offered = MappingProxyType({model.model_id: model for model in discovered})

    def prepare_reconfigure(
        self,
        *,
        serve: Sequence[str] | None,
        aliases: Mapping[str, str] | None,
        default_model: str | None,
    ) -> Callable[[], None]:
        """Validate and build a new catalog without serving it; calling the result serves it.

        Lets a reload check every part of a new configuration before applying any part.
        Raises ModelConfigError when the models section cannot be served.
        """
        with self._rebuild:
            if self._discovered is None:
                raise RuntimeError("LlmModelRegistry.prepare_reconfigure() called before load()")
            new_serve = tuple(serve) if serve is not None else None
            new_aliases = dict(aliases or {})
            snapshot = self._build(self._discovered, new_serve, new_aliases, default_model)
            _import_what_serving_needs(snapshot)

        def commit() -> None:
            with self._rebuild:
                self._serve, self._aliases = new_serve, new_aliases
                self._default_model = default_model
                self._snapshot = snapshot

        return commit

    def current(self) -> Catalog:
        return self._require().catalog

    def served_model(self, model_id: str) -> DiscoveredModel:
        """The llm model objects behind a model id a catalog of this registry resolved.

        Looked up among everything llm offered at load, which no reload changes: a request
        resolved just before a reload runs the model it resolved, rather than failing because
        the catalog in force has changed since. Whether a model may be asked for at all is the
        catalog's decision, made once, when the request is resolved.
        """
        model = self._offered.get(model_id)
        if model is None:
            raise UnknownModel(model_id, self._require().catalog.names())
        return model

    def _require(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise RuntimeError("LlmModelRegistry.load() must run before the catalog is used")
        return snapshot

    @staticmethod
    def _build(
        discovered: Sequence[DiscoveredModel],
        serve: Sequence[str] | None,
        aliases: Mapping[str, str],
        default_model: str | None,
    ) -> Snapshot:
        return build_snapshot(
            discovered,
            serve=serve,
            aliases=aliases,
            default_model=default_model,
            llm_default=_llm_default_model(),
        )


def _import_what_serving_needs(snapshot: Snapshot) -> None:
    # Here, once, rather than in the first call of a newly served model.
    deferred.load_used_by(
        implementation
        for model in snapshot.served.values()
        for implementation in (model.sync_model, model.async_model)
        if implementation is not None
    )
