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


Item = str | Done | Failed


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
    if stop.is_set():
        return
    try:
        response = model.prompt(**prompt_kwargs)
        chunks = iter(response)
        try:
            for text in chunks:
                if stop.is_set():
                    return
                if text:
                    post(text)
        finally:
            # Closing propagates GeneratorExit into the plugin's execute() generator, so it
            # can release connections now instead of whenever it is garbage collected.
            chunks.close()
        if not stop.is_set():
            post(Done(usage_of(response)))
    except Exception as error:
        if not stop.is_set():
            post(Failed(error))
