"""Models for benchmarking, registered with llm as a plugin module.

The server loads this module through its configuration (`models.plugin_modules:
[bench.bench_models]`). Model options cannot travel over the wire, so each model reads its
parameters from `key=value` words in the prompt instead:

- `bench-chunks`: streams `chunks=N` (default 200) short chunks with no delay, like llm-markov
  with its delay set to zero.
- `bench-slow`: sends one chunk, waits `hold=S` seconds (default 5), then sends one more. It
  keeps streams open cheaply so that thousands can be held at once.

Both have a synchronous and an asynchronous implementation so that the server may use either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, TypeVar

import llm
from llm.parts import StreamEvent

DEFAULT_CHUNKS = 200
DEFAULT_HOLD_S = 5.0
# A cap on what a prompt can ask for keeps a typo from pinning a server for hours.
MAX_CHUNKS = 100_000
MAX_HOLD_S = 600.0

N = TypeVar("N", int, float)


def parse_params(prompt: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for word in prompt.split():
        key, sep, value = word.partition("=")
        if sep and key:
            params[key] = value
    return params


def _bounded(prompt: str, key: str, parse: Callable[[str], N], default: N, low: N, high: N) -> N:
    """The prompt's `key=value` read with `parse`, the default when absent or unreadable, kept
    within [low, high]."""
    raw = parse_params(prompt).get(key)
    try:
        value = parse(raw) if raw is not None else default
    except ValueError:
        value = default
    return min(max(value, low), high)


def chunk_count(prompt: str) -> int:
    return _bounded(prompt, "chunks", int, DEFAULT_CHUNKS, 1, MAX_CHUNKS)


def hold_seconds(prompt: str) -> float:
    return _bounded(prompt, "hold", float, DEFAULT_HOLD_S, 0.0, MAX_HOLD_S)


def _prompt_text(prompt: llm.Prompt) -> str:
    return prompt.prompt or ""


def _count_usage(response: llm.Response | llm.AsyncResponse, prompt_text: str, chunks: int) -> None:
    response.set_usage(input=len(prompt_text.split()), output=chunks)


class _BenchModel:
    model_id: str
    can_stream = True

    def __str__(self) -> str:
        return f"Bench: {self.model_id}"


class _Chunks(_BenchModel):
    model_id = "bench-chunks"

    @staticmethod
    def _words(prompt: llm.Prompt, response: llm.Response | llm.AsyncResponse) -> Iterator[str]:
        text = _prompt_text(prompt)
        count = chunk_count(text)
        _count_usage(response, text, count)
        return (f"w{index} " for index in range(count))


class BenchChunks(_Chunks, llm.Model):
    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str]:
        yield from self._words(prompt, response)


class BenchChunksAsync(_Chunks, llm.AsyncModel):
    async def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.AsyncResponse,
        conversation: llm.AsyncConversation | None,
    ) -> AsyncGenerator[str | StreamEvent, None]:
        for word in self._words(prompt, response):
            yield word


class _Slow(_BenchModel):
    model_id = "bench-slow"

    @staticmethod
    def _hold(prompt: llm.Prompt, response: llm.Response | llm.AsyncResponse) -> float:
        """How long to hold the stream open between its two chunks."""
        text = _prompt_text(prompt)
        _count_usage(response, text, 2)
        return hold_seconds(text)


class BenchSlow(_Slow, llm.Model):
    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str]:
        hold = self._hold(prompt, response)
        yield "opened "
        time.sleep(hold)
        yield "closed"


class BenchSlowAsync(_Slow, llm.AsyncModel):
    async def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.AsyncResponse,
        conversation: llm.AsyncConversation | None,
    ) -> AsyncGenerator[str | StreamEvent, None]:
        hold = self._hold(prompt, response)
        yield "opened "
        await asyncio.sleep(hold)
        yield "closed"


@llm.hookimpl
def register_models(register: Any) -> None:
    register(BenchChunks(), BenchChunksAsync())
    register(BenchSlow(), BenchSlowAsync())


def ensure_registered() -> None:
    """Register this module with llm in this process, as the server's config would."""
    import sys

    from llm.plugins import pm

    module = sys.modules[__name__]
    if not pm.is_registered(module):
        pm.register(module, name=__name__)
