"""Drives a sync llm response on a worker thread and hands its output to the event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from adapters.llm.prompting import LlmCall, tool_calls_of
from domain.answer import ModelOutput
from domain.request import ToolCall
from domain.usage import Usage
from domain.value import value_object


@value_object
class Done:
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    resolved_model: str | None = None


@value_object
class Failed:
    error: Exception


@value_object
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
    call: LlmCall,
    stop: threading.Event,
    post: Callable[[Item], None],
    *,
    want_tool_calls: bool = False,
) -> None:
    """Runs on a pool thread. `stop` is checked at every chunk: a sync plugin cannot be
    interrupted mid-call, so the next chunk is the earliest point to give up."""
    try:
        post(_drive(call, stop, post, want_tool_calls))
    except Exception as error:
        post(Failed(error))


def _drive(
    call: LlmCall,
    stop: threading.Event,
    post: Callable[[Item], None],
    want_tool_calls: bool,
) -> Item:
    if stop.is_set():
        return Stopped()
    response = call.start()
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
    return Done(
        usage_of(response),
        # Only a request that offered tools can be answered with calls to them.
        tool_calls_of(response.messages()) if want_tool_calls else (),
        getattr(response, "resolved_model", None),
    )


def run_sync_complete(
    call: LlmCall, stop: threading.Event, *, want_tool_calls: bool = False
) -> ModelOutput | None:
    """Runs on a pool thread: the whole answer, or None once `stop` is set (checked at every
    chunk, as in run_sync_response). The model's exceptions propagate to the caller."""
    if stop.is_set():
        return None
    response = call.start()
    chunks = iter(response)
    try:
        for _ in chunks:
            if stop.is_set():
                return None
    finally:
        chunks.close()
    return ModelOutput(
        # llm kept the chunks as they came; joined once, here.
        text=response.text(),
        usage=usage_of(response),
        tool_calls=tool_calls_of(response.messages()) if want_tool_calls else (),
        resolved_model=getattr(response, "resolved_model", None),
    )
