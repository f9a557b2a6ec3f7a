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
from adapters.llm.registry import LlmModelRegistry
from adapters.llm.threaded import Done, Failed, Item, Stopped, run_sync_response, usage_of
from domain.answer import GatewayEvent, ModelOutput, TextChunk, UsageReport
from domain.errors import ModelUnavailable, SchemaInvalid
from domain.request import ModelInvocation
from domain.usage import Usage


class LlmGateway:
    """Implements application.ports.ModelGateway on top of LlmModelRegistry's models."""

    def __init__(self, registry: LlmModelRegistry, *, max_threads: int = 64) -> None:
        self._registry = registry
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="llm-model")
        # Stop flags of running sync calls, so close() can end them at their next chunk.
        self._running: set[threading.Event] = set()

    async def complete(self, invocation: ModelInvocation) -> ModelOutput:
        parts: list[str] = []
        usage = Usage()
        async with aclosing(self._events(invocation, stream=False)) as events:
            async for event in events:
                if isinstance(event, TextChunk):
                    parts.append(event.text)
                else:
                    usage = event.usage
        return ModelOutput(text="".join(parts), usage=usage)

    def stream(self, invocation: ModelInvocation) -> AsyncGenerator[GatewayEvent, None]:
        """Text chunks as the model produces them, then one UsageReport.

        Closing the generator or cancelling the task awaiting it stops the model: an async
        model at once, a sync one when it next yields a chunk.
        """
        return self._events(invocation, stream=True)

    def close(self) -> None:
        for stop in list(self._running):
            stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _events(
        self, invocation: ModelInvocation, *, stream: bool
    ) -> AsyncGenerator[GatewayEvent, None]:
        # Returns the chosen generator itself rather than re-yielding from it: one async
        # generator layer less on every chunk.
        served = self._registry.served_model(invocation.model_id)
        model = served.preferred
        kwargs = self._prompt_kwargs(invocation, served, model, stream=stream)
        if served.async_model is not None:
            return self._async_events(served.model_id, model, kwargs)
        return self._threaded_events(served.model_id, model, kwargs)

    def _prompt_kwargs(
        self,
        invocation: ModelInvocation,
        served: DiscoveredModel,
        model: Any,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            # llm joins fragments itself, the same way it does for its own CLI.
            "fragments": list(invocation.user_fragments),
            "system_fragments": list(invocation.system_fragments) or None,
            "stream": stream,
        }
        if invocation.schema is not None:
            if not getattr(model, "supports_schema", False):
                capable = [m.model_id for m in self._registry.current().models if m.supports_schema]
                listing = ", ".join(capable) if capable else "none"
                raise SchemaInvalid(
                    f"model {served.model_id!r} cannot produce structured output, so it cannot "
                    f"honour response_model_schema. Served models that can: {listing}"
                )
            kwargs["schema"] = dict(invocation.schema)
        return kwargs

    async def _async_events(
        self, model_id: str, model: Any, kwargs: dict[str, Any]
    ) -> AsyncGenerator[GatewayEvent, None]:
        try:
            response = model.prompt(**kwargs)
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
        yield UsageReport(usage_of(response))

    async def _threaded_events(
        self, model_id: str, model: Any, kwargs: dict[str, Any]
    ) -> AsyncGenerator[GatewayEvent, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Item] = asyncio.Queue()
        stop = threading.Event()

        def post(item: Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                # The loop is gone, so nobody will read what the model produces.
                stop.set()

        self._running.add(stop)
        job: Future[None] | None = None
        try:
            try:
                job = self._pool.submit(run_sync_response, model, kwargs, stop, post)
            except RuntimeError as error:
                raise _shutting_down() from error
            while True:
                item = await queue.get()
                if isinstance(item, Done):
                    yield UsageReport(item.usage)
                    return
                if isinstance(item, Failed):
                    raise translate(model_id, item.error, model) from item.error
                if isinstance(item, Stopped):
                    raise _shutting_down()
                yield TextChunk(item)
        finally:
            # Reached on completion, failure, aclose() and cancellation alike.
            stop.set()
            self._running.discard(stop)
            if job is not None:
                # Frees the slot at once when the pool was saturated and the job never began.
                job.cancel()


def _shutting_down() -> ModelUnavailable:
    return ModelUnavailable("the server is shutting down and takes no new model calls; retry")
