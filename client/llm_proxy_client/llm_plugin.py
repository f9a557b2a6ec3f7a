"""An `llm` plugin: the models an llm-proxy serves appear in `llm` as ``proxy/<model-id>``.

Enabled by setting ``LLM_PROXY_URL`` (same URL forms as the client). The token comes from that
URL, ``LLM_PROXY_TOKEN`` or ``LLM_PROXY_TOKEN_FILE``; ``LLM_PROXY_CA_BUNDLE`` names a private CA,
and ``LLM_PROXY_CLIENT_CERT``/``LLM_PROXY_CLIENT_KEY`` a client certificate for mutual TLS.
`llm` asks plugins for models on nearly every command, so a proxy that is down must cost at
most one short timeout per process and a warning, never a hang or a crash.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from typing import TypedDict

import llm
from llm.models import AsyncConversation, AsyncResponse, Conversation, Prompt, Response

from llm_proxy_client import (
    NO_RETRY,
    AsyncProxyClient,
    ExecuteResult,
    ModelInfo,
    ProxyClient,
    ProxyClientError,
    ServerInfo,
)
from llm_proxy_client.connection import URL_ENV

PREFIX = "proxy/"
LIST_TIMEOUT_ENV = "LLM_PROXY_LIST_TIMEOUT"
DEFAULT_LIST_TIMEOUT = 2.0
# Listing results are reused for this long: `llm` re-runs the hook on every model lookup.
CATALOG_TTL = 60.0
# After a failed listing, don't try again (nor warn again) for this long.
FAILURE_TTL = 30.0

_lock = threading.Lock()
_catalog: dict[str, tuple[ServerInfo | None, float]] = {}
_clients: dict[str, ProxyClient] = {}


def _list_timeout() -> float:
    try:
        return float(os.environ.get(LIST_TIMEOUT_ENV, DEFAULT_LIST_TIMEOUT))
    except ValueError:
        return DEFAULT_LIST_TIMEOUT


def _warn(message: str) -> None:
    print(f"llm-proxy plugin: {message}", file=sys.stderr)


def server_catalog(url: str) -> ServerInfo | None:
    """The server's models, or None (after one warning) when it cannot be listed right now."""
    with _lock:
        cached = _catalog.get(url)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        info: ServerInfo | None
        try:
            with ProxyClient(url, timeout=_list_timeout(), retry=NO_RETRY) as client:
                info = client.server_info()
        except ProxyClientError as exc:
            _warn(f"cannot list models, so no {PREFIX}* models are available: {exc}")
            info = None
        ttl = CATALOG_TTL if info is not None else FAILURE_TTL
        _catalog[url] = (info, time.monotonic() + ttl)
        return info


def _client(url: str) -> ProxyClient:
    # One client (so one channel and connection) per URL for the whole process.
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = ProxyClient(url)
        return client


def reset() -> None:
    """Forget cached catalogs and close cached connections (tests, or a host whose proxy moved)."""
    with _lock:
        _catalog.clear()
        for client in _clients.values():
            client.close()
        _clients.clear()


@llm.hookimpl
def register_models(register: Callable[..., None]) -> None:
    url = os.environ.get(URL_ENV)
    if not url:
        return
    info = server_catalog(url)
    if info is None:
        return
    for served in info.models:
        register(
            ProxyModel(url, served),
            AsyncProxyModel(url, served),
            aliases=tuple(PREFIX + alias for alias in _aliases_of(served, info)),
        )


def _aliases_of(served: ModelInfo, info: ServerInfo) -> list[str]:
    names = list(served.aliases)
    names += [alias for alias, target in sorted(info.aliases.items()) if target == served.model_id]
    return list(dict.fromkeys(names))


class _Request(TypedDict):
    prompt: str
    system: str | None
    schema: Mapping[str, object] | None


def _request(prompt: Prompt) -> _Request:
    text: str = prompt.prompt
    system: str | None = prompt.system or None
    raw = prompt.schema
    # llm turns pydantic classes into JSON Schema already; this only guards the declared type.
    schema: Mapping[str, object] | None = (
        raw.model_json_schema() if isinstance(raw, type) else raw
    ) or None
    return {"prompt": text, "system": system, "schema": schema}


def _report(response: Response | AsyncResponse, result: ExecuteResult) -> None:
    metrics = result.metrics
    details = {"cost_usd": metrics.cost_usd} if metrics.cost_usd is not None else None
    response.set_usage(input=metrics.input_tokens, output=metrics.output_tokens, details=details)
    if result.model:
        response.set_resolved_model(result.model)


class _ProxyModelBase:
    # The wire protocol carries one turn, so `llm -c` and `llm chat` can't be honoured.
    supports_conversation = False
    supports_schema = True

    def __init__(self, url: str, served: ModelInfo) -> None:
        self.url = url
        self.served_id = served.model_id
        self.model_id = PREFIX + served.model_id
        self.can_stream = served.supports_streaming

    def __str__(self) -> str:
        return f"llm-proxy: {self.model_id}"


class ProxyModel(_ProxyModelBase, llm.Model):
    def execute(
        self,
        prompt: Prompt,
        stream: bool,
        response: Response,
        conversation: Conversation | None = None,
    ) -> Iterator[str]:
        client = _client(self.url)
        try:
            if stream and self.can_stream:
                answer = client.stream(model=self.served_id, **_request(prompt))
                yield from answer
                result = answer.result()
            else:
                result = client.execute(model=self.served_id, **_request(prompt))
                yield result.text
        except ProxyClientError as exc:
            raise llm.ModelError(str(exc)) from exc
        _report(response, result)


class AsyncProxyModel(_ProxyModelBase, llm.AsyncModel):
    async def execute(
        self,
        prompt: Prompt,
        stream: bool,
        response: AsyncResponse,
        conversation: AsyncConversation | None = None,
    ) -> AsyncGenerator[str, None]:
        # A client per call: grpc.aio channels belong to one event loop, and llm callers
        # commonly run each prompt under a fresh asyncio.run().
        async with AsyncProxyClient(self.url) as client:
            try:
                if stream and self.can_stream:
                    answer = client.stream(model=self.served_id, **_request(prompt))
                    async for chunk in answer:
                        yield chunk
                    result = await answer.result()
                else:
                    result = await client.execute(model=self.served_id, **_request(prompt))
                    yield result.text
            except ProxyClientError as exc:
                raise llm.ModelError(str(exc)) from exc
        _report(response, result)
