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
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import llm
from llm.parts import StreamEvent

DEFAULT_CHUNKS = 200
DEFAULT_HOLD_S = 5.0
# A cap on what a prompt can ask for keeps a typo from pinning a server for hours.
MAX_CHUNKS = 100_000
MAX_HOLD_S = 600.0


def parse_params(prompt: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for word in prompt.split():
        key, sep, value = word.partition("=")
        if sep and key:
            params[key] = value
    return params


def chunk_count(prompt: str) -> int:
    raw = parse_params(prompt).get("chunks")
    try:
        count = int(raw) if raw is not None else DEFAULT_CHUNKS
    except ValueError:
        count = DEFAULT_CHUNKS
    return min(max(count, 1), MAX_CHUNKS)


def hold_seconds(prompt: str) -> float:
    raw = parse_params(prompt).get("hold")
    try:
        hold = float(raw) if raw is not None else DEFAULT_HOLD_S
    except ValueError:
        hold = DEFAULT_HOLD_S
    return min(max(hold, 0.0), MAX_HOLD_S)


def _prompt_text(prompt: llm.Prompt) -> str:
    return prompt.prompt or ""


def _count_usage(response: llm.Response | llm.AsyncResponse, prompt_text: str, chunks: int) -> None:
    response.set_usage(input=len(prompt_text.split()), output=chunks)


class _Chunks:
    model_id = "bench-chunks"
    can_stream = True

    def __str__(self) -> str:
        return f"Bench: {self.model_id}"


class BenchChunks(_Chunks, llm.Model):
    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str]:
        text = _prompt_text(prompt)
        count = chunk_count(text)
        _count_usage(response, text, count)
        for index in range(count):
            yield f"w{index} "


class BenchChunksAsync(_Chunks, llm.AsyncModel):
    async def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.AsyncResponse,
        conversation: llm.AsyncConversation | None,
    ) -> AsyncGenerator[str | StreamEvent, None]:
        text = _prompt_text(prompt)
        count = chunk_count(text)
        _count_usage(response, text, count)
        for index in range(count):
            yield f"w{index} "


class _Slow:
    model_id = "bench-slow"
    can_stream = True

    def __str__(self) -> str:
        return f"Bench: {self.model_id}"


class BenchSlow(_Slow, llm.Model):
    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str]:
        text = _prompt_text(prompt)
        _count_usage(response, text, 2)
        yield "opened "
        time.sleep(hold_seconds(text))
        yield "closed"


class BenchSlowAsync(_Slow, llm.AsyncModel):
    async def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.AsyncResponse,
        conversation: llm.AsyncConversation | None,
    ) -> AsyncGenerator[str | StreamEvent, None]:
        text = _prompt_text(prompt)
        _count_usage(response, text, 2)
        yield "opened "
        await asyncio.sleep(hold_seconds(text))
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
