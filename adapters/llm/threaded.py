"""Drives a sync llm response on a worker thread and hands its output to the event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from domain.usage import Usage


@dataclass(frozen=True, slots=True)
class Done:
    usage: Usage


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception


@dataclass(frozen=True, slots=True)
class Stopped:
    """The run gave up because it was asked to; only matters if someone still listens."""


Item = str | Done | Failed | Stopped


def usage_of(response: Any) -> Usage:
    # The attributes set_usage() fills; response.usage() would force the response again.
    return Usage(
        input_tokens=getattr(response, "input_tokens", None),
        output_tokens=getattr(response, "output_tokens", None),
    )


def run_sync_response(
    model: Any,
    prompt_kwargs: Mapping[str, Any],
    stop: threading.Event,
    post: Callable[[Item], None],
) -> None:
    """Runs on a pool thread. `stop` is checked at every chunk: a sync plugin cannot be
    interrupted mid-call, so the next chunk is the earliest point to give up."""
    try:
        post(_drive(model, prompt_kwargs, stop, post))
    except Exception as error:
        post(Failed(error))


def _drive(
    model: Any,
    prompt_kwargs: Mapping[str, Any],
    stop: threading.Event,
    post: Callable[[Item], None],
) -> Item:
    if stop.is_set():
        return Stopped()
    response = model.prompt(**prompt_kwargs)
    chunks = iter(response)
    try:
        for text in chunks:
            if stop.is_set():
                return Stopped()
            if text:
                post(text)
    finally:
        # Closing propagates GeneratorExit into the plugin's execute() generator, so it
        # can release connections now instead of whenever it is garbage collected.
        chunks.close()
    return Done(usage_of(response))
