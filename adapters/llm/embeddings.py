"""llm's embedding models behind the EmbeddingGateway port."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

import llm

from adapters.llm import deferred
from adapters.llm.errors import translate
from domain.catalog import ModelDescription
from domain.errors import ModelUnavailable
from domain.usage import Usage


class LlmEmbeddingGateway:
    """Serves the embedding models `models.serve` names (ids, aliases or globs); with no list,
    every embedding model llm knows and has a key for, like prompt models."""

    def __init__(self, serve: Sequence[str] | None = None) -> None:
        self._serve = tuple(serve) if serve is not None else None
        self._served: dict[str, Any] | None = None
        self._models: tuple[ModelDescription, ...] = ()

    def models(self) -> tuple[ModelDescription, ...]:
        if self._served is None:
            self._load()
        return self._models

    def _load(self) -> None:
        served: dict[str, Any] = {}
        described: list[ModelDescription] = []
        for entry in llm.get_embedding_models_with_aliases():
            model = entry.model
            names = (model.model_id, *entry.aliases)
            if self._serve is None:
                if not _key_available(model):
                    continue
            elif not any(fnmatchcase(name, pattern) for pattern in self._serve for name in names):
                continue
            served[model.model_id] = model
            described.append(
                ModelDescription(
                    model_id=model.model_id,
                    provider=type(model).__module__.split(".")[0],
                    supports_streaming=False,
                    aliases=tuple(entry.aliases),
                )
            )
        deferred.load_used_by(served.values())
        self._served = served
        self._models = tuple(described)

    async def embed(
        self, model_id: str, inputs: tuple[str, ...]
    ) -> tuple[tuple[tuple[float, ...], ...], Usage]:
        if self._served is None:
            self._load()
        assert self._served is not None
        model = self._served.get(model_id)
        if model is None:
            raise ModelUnavailable(f"embedding model {model_id!r} is no longer served")
        try:
            # llm's embedding models are blocking; a thread keeps the event loop free.
            vectors = await asyncio.to_thread(lambda: list(model.embed_multi(inputs)))
        except Exception as error:
            raise translate(model_id, error, model) from error
        # llm reports no token counts for embeddings: the word count stands in for them.
        tokens = sum(len(text.split()) for text in inputs)
        return tuple(tuple(float(x) for x in vector) for vector in vectors), Usage(tokens, 0)


def _key_available(model: Any) -> bool:
    needs = getattr(model, "needs_key", None)
    if not needs:
        return True
    try:
        return bool(llm.get_key(None, needs, getattr(model, "key_env_var", None)))
    except Exception:
        return False
