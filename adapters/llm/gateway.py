"""Runs prompts on llm models without blocking the event loop, and stops them on cancel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing
from typing import Any

from adapters.llm.discovery import DiscoveredModel
from adapters.llm.errors import translate
from adapters.llm.options import check_options
from adapters.llm.prompting import LlmCall, build_call, tool_calls_of
from adapters.llm.registry import LlmModelRegistry
from adapters.llm.threaded import (
    Done,
    Failed,
    Item,
    Stopped,
    run_sync_complete,
    run_sync_response,
    usage_of,
)
from domain.answer import GatewayEvent, ModelOutput, TextChunk, UsageReport
from domain.errors import ModelUnavailable
from domain.request import ModelInvocation

# Characters of a sync model's answer that may wait for the reader before the model is paused.
MAX_BUFFERED_CHARS = 64 * 1024
_STOP_POLL_S = 0.1


class LlmGateway:
    """Implements application.ports.ModelGateway on top of LlmModelRegistry's models."""

    def __init__(self, registry: LlmModelRegistry, *, max_threads: int = 64) -> None:
        self._registry = registry
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="llm-model")
        # Stop flags of running sync calls, so close() can end them at their next chunk.
        self._running: set[threading.Event] = set()

    async def complete(self, invocation: ModelInvocation) -> ModelOutput:
        # Not built on the stream: a whole answer needs no event per chunk, no generator
        # layers and, for a sync model, no hop to the event loop per chunk.
        served, model, call = self._prepare(invocation, stream=False)
        want_tool_calls = bool(invocation.tools)
        if served.async_model is not None:
            return await self._async_complete(served.model_id, model, call, want_tool_calls)
        return await self._threaded_complete(served.model_id, model, call, want_tool_calls)

    def stream(self, invocation: ModelInvocation) -> AsyncGenerator[GatewayEvent, None]:
        """Text chunks as the model produces them, its tool calls, then one UsageReport.

        Closing the generator or cancelling the task awaiting it stops the model: an async
        model at once, a sync one when it next yields a chunk.
        """
        return self._events(invocation, stream=True)

    def close(self) -> None:
        for stop in list(self._running):
            stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(
        self, invocation: ModelInvocation, *, stream: bool
    ) -> tuple[DiscoveredModel, Any, LlmCall]:
        served = self._served(invocation)
        model = served.preferred
        # Before any call: a model must not be reached with options it would refuse.
        check_options(served.model_id, model, invocation.options)
        try:
            return served, model, build_call(invocation, model, stream=stream)
        except Exception as error:
            # Rebuilding earlier turns runs llm's own checks (conversation support, say).
            raise translate(served.model_id, error, model) from error

    def _served(self, invocation: ModelInvocation) -> DiscoveredModel:
        # The model the request was resolved to rides along with it: no second lookup, and
        # a reload between resolution and this call cannot change which model runs.
        handle = invocation.handle
        if isinstance(handle, DiscoveredModel):
            return handle
        return self._registry.served_model(invocation.model_id)

    def _events(
        self, invocation: ModelInvocation, *, stream: bool
    ) -> AsyncGenerator[GatewayEvent, None]:
        # Returns the chosen generator itself rather than re-yielding from it: one async
        # generator layer less on every chunk.
        served, model, call = self._prepare(invocation, stream=stream)
        want_tool_calls = bool(invocation.tools)
        if served.async_model is not None:
            return self._async_events(served.model_id, model, call, want_tool_calls)
        return self._threaded_events(served.model_id, model, call, want_tool_calls)

    async def _async_complete(
        self, model_id: str, model: Any, call: LlmCall, want_tool_calls: bool
    ) -> ModelOutput:
        try:
            response = call.start()
            # llm keeps the chunks and joins them once; a CancelledError raised while we
            # await lands inside the plugin's own await and ends its generator.
            text = await response.text()
            # Only a request that offered tools can be answered with calls to them.
            calls = tool_calls_of(await response.messages()) if want_tool_calls else ()
        except Exception as error:
            raise translate(model_id, error, model) from error
        return ModelOutput(
            text=text,
            usage=usage_of(response),
            tool_calls=calls,
            resolved_model=response.resolved_model,
        )

    async def _threaded_complete(
        self, model_id: str, model: Any, call: LlmCall, want_tool_calls: bool
    ) -> ModelOutput:
        stop = threading.Event()
        try:
            job = self._pool.submit(run_sync_complete, call, stop, want_tool_calls=want_tool_calls)
        except RuntimeError as error:
            raise _shutting_down() from error
        self._running.add(stop)
        try:
            output = await asyncio.wrap_future(job)
        except Exception as error:
            raise translate(model_id, error, model) from error
        finally:
            # Reached on completion, failure and cancellation alike: a cancelled call stops
            # at the model's next chunk, or never starts if it still waits for a thread.
            stop.set()
            self._running.discard(stop)
            job.cancel()
        if output is None:
            raise _shutting_down()
        return output

    async def _async_events(
        self, model_id: str, model: Any, call: LlmCall, want_tool_calls: bool
    ) -> AsyncGenerator[GatewayEvent, None]:
        try:
            response = call.start()
        except Exception as error:
            raise translate(model_id, error, model) from error
        # astream_events closes the plugin's generator if we stop early; a CancelledError
        # raised while we await it lands inside the plugin's own await.
        async with aclosing(response.astream_events()) as events:
            while True:
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except Exception as error:
                    raise translate(model_id, error, model) from error
                if event.type == "text" and event.chunk:
                    yield TextChunk(event.chunk)
        if want_tool_calls:
            # Only a request that offered tools can be answered with calls to them.
            try:
                calls = tool_calls_of(await response.messages())
            except Exception as error:
                raise translate(model_id, error, model) from error
            for tool_call in calls:
                yield tool_call
        yield UsageReport(usage_of(response), response.resolved_model)

    async def _threaded_events(
        self, model_id: str, model: Any, call: LlmCall, want_tool_calls: bool
    ) -> AsyncGenerator[GatewayEvent, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Item] = asyncio.Queue()
        stop = threading.Event()
        room = _Room(stop)

        def post(item: Item) -> None:
            if isinstance(item, str) and not room.take(len(item)):
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                # The loop is gone, so nobody will read what the model produces.
                stop.set()

        self._running.add(stop)
        job: Future[None] | None = None
        try:
            try:
                job = self._pool.submit(
                    run_sync_response, call, stop, post, want_tool_calls=want_tool_calls
                )
            except RuntimeError as error:
                raise _shutting_down() from error
            while True:
                item = await queue.get()
                if isinstance(item, Done):
                    for tool_call in item.tool_calls:
                        yield tool_call
                    yield UsageReport(item.usage, item.resolved_model)
                    return
                if isinstance(item, Failed):
                    raise translate(model_id, item.error, model) from item.error
                if isinstance(item, Stopped):
                    raise _shutting_down()
                room.give(len(item))
                yield TextChunk(item)
        finally:
            # Reached on completion, failure, aclose() and cancellation alike.
            stop.set()
            room.close()
            self._running.discard(stop)
            if job is not None:
                # Frees the slot at once when the pool was saturated and the job never began.
                job.cancel()


class _Room:
    """How much of a sync model's answer may wait for its reader: the model's thread waits
    while MAX_BUFFERED_CHARS are queued, as an async model waits in its own await. Without
    it a reader that stops reading makes the server keep the whole answer in memory."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._queued = 0
        self._changed = threading.Condition()

    def take(self, size: int) -> bool:
        """On the model's thread: waits for room for `size` characters; False once stopped."""
        with self._changed:
            # A timeout, so that a stop set from elsewhere (LlmGateway.close) is seen too.
            while self._queued >= MAX_BUFFERED_CHARS and not self._stop.is_set():
                self._changed.wait(_STOP_POLL_S)
            self._queued += size
        return not self._stop.is_set()

    def give(self, size: int) -> None:
        with self._changed:
            self._queued -= size
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._changed.notify_all()


def _shutting_down() -> ModelUnavailable:
    return ModelUnavailable("the server is shutting down and takes no new model calls; retry")
