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
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from typing import Any, Optional, TypedDict, Union

import llm
from llm import parts
from llm.models import AsyncConversation, AsyncResponse, Conversation, Prompt, Response
from pydantic import Field, create_model

from llm_proxy_client import (
    NO_RETRY,
    AsyncProxyClient,
    Attachment,
    ExecuteResult,
    Message,
    ModelInfo,
    ProxyClient,
    ProxyClientError,
    ServerInfo,
    Tool,
    ToolCall,
    ToolResult,
)
from llm_proxy_client.connection import URL_ENV
from llm_proxy_client.types import ROLES, Part

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
_explained: set[str] = set()


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
        _explained.clear()
        for client in _clients.values():
            client.close()
        _clients.clear()


class Request(TypedDict):
    messages: list[Message]
    options: dict[str, object]
    schema: Mapping[str, object] | None
    tools: list[Tool]


@llm.hookimpl
def register_models(register: Callable[..., None]) -> None:
    url = os.environ.get(URL_ENV)
    wanted = requested_proxy_model(sys.argv)
    if not url:
        if wanted is not None:
            _explain_once(
                f"{PREFIX}* models come from an llm-proxy server named by {URL_ENV}, which is not "
                f"set; for example: export {URL_ENV}=llm-proxy+insecure://127.0.0.1:50051"
            )
        return
    info = server_catalog(url)
    if info is None:
        return
    for served in info.models:
        sync_class, async_class = _model_classes(served)
        register(
            sync_class(url, served),
            async_class(url, served),
            aliases=tuple(PREFIX + alias for alias in _aliases_of(served, info)),
        )
    if wanted is not None and wanted.removeprefix(PREFIX) not in _names(info):
        offered = ", ".join(sorted(PREFIX + name for name in _names(info))) or "none"
        _explain_once(
            f"the server at {url} does not offer {wanted.removeprefix(PREFIX)!r} to this "
            "caller: it is not served there, or the token's `models` claim leaves it out; "
            f"this caller may use: {offered}"
        )


def requested_proxy_model(argv: Sequence[str]) -> str | None:
    """The proxy/… model an `llm` command line asks for with -m/--model, if any.

    llm reports a model no plugin registered as just "Unknown model"; knowing what was asked
    for lets this plugin say why it did not register it.
    """
    for index, arg in enumerate(argv[1:], start=1):
        value: str | None = None
        if arg in ("-m", "--model") and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--model="):
            value = arg.removeprefix("--model=")
        if value is not None and value.startswith(PREFIX):
            return value
    return None


def _names(info: ServerInfo) -> set[str]:
    return (
        {m.model_id for m in info.models}
        | set(info.aliases)
        | {alias for m in info.models for alias in m.aliases}
    )


def _explain_once(message: str) -> None:
    # llm calls register_models on every model lookup; one explanation per process is enough.
    with _lock:
        if message in _explained:
            return
        _explained.add(message)
    _warn(message)


def _aliases_of(served: ModelInfo, info: ServerInfo) -> list[str]:
    names = list(served.aliases)
    names += [alias for alias, target in sorted(info.aliases.items()) if target == served.model_id]
    return list(dict.fromkeys(names))


# JSON Schema types as the Python types pydantic validates `-o name value` against.
_TYPES: Mapping[str, object] = {
    "number": float,
    "integer": int,
    "boolean": bool,
    "string": str,
    "array": list[Any],
    "object": dict[str, Any],
}


def options_class(served: ModelInfo) -> type[llm.Options]:
    """The model's llm Options class, rebuilt from what the server says it accepts, so that
    `llm -o` checks names and types here and `llm models --options` lists them."""
    fields: dict[str, Any] = {}
    for option in served.options:
        kinds = [_TYPES.get(kind, Any) for kind in option.type.split("|") if kind != "null"]
        annotation: Any = Any if not kinds or Any in kinds else Union[tuple(kinds)]  # noqa: UP007
        fields[option.name] = (
            Optional[annotation],  # noqa: UP045 - a runtime type expression, built here
            Field(default=None, description=option.description or None),
        )
    name = "Options_" + "".join(c if c.isalnum() else "_" for c in served.model_id)
    built: type[llm.Options] = create_model(name, __base__=llm.Options, **fields)
    return built


def _model_classes(served: ModelInfo) -> tuple[type[ProxyModel], type[AsyncProxyModel]]:
    # A class per served model: llm reads Options and the capabilities from the class (and
    # `llm models --options` describes each class once).
    attributes = {
        "Options": options_class(served),
        "can_stream": served.supports_streaming,
        "supports_schema": served.supports_schema,
        "supports_tools": served.supports_tools,
        "supports_conversation": served.supports_conversation,
        "attachment_types": frozenset(served.attachment_types),
    }
    suffix = "".join(c if c.isalnum() else "_" for c in served.model_id)
    return (
        type(f"ProxyModel_{suffix}", (ProxyModel,), dict(attributes)),
        type(f"AsyncProxyModel_{suffix}", (AsyncProxyModel,), dict(attributes)),
    )


def request_of(prompt: Prompt) -> Request:
    """What to send for one llm prompt: its whole conversation as messages (llm puts the
    history, the system prompt and this turn's text and attachments in `prompt.messages`), the
    options that were set, the schema and the tools, without their implementations."""
    raw = prompt.schema
    # llm turns pydantic classes into JSON Schema already; this only guards the declared type.
    schema: Mapping[str, object] | None = (
        raw.model_json_schema() if isinstance(raw, type) else raw
    ) or None
    return {
        "messages": [m for m in (_message(each) for each in prompt.messages) if m.parts],
        "options": {name: value for name, value in prompt.options if value is not None},
        "schema": schema,
        "tools": [
            Tool(name=t.name, description=t.description or "", input_schema=t.input_schema)
            for t in prompt.tools
            if isinstance(t, llm.Tool)
        ],
    }


def _message(message: parts.Message) -> Message:
    role = message.role if message.role in ROLES else "user"
    return Message(role, tuple(p for p in (_part(each) for each in message.parts) if p is not None))


def _part(part: parts.Part) -> Part | None:
    if isinstance(part, parts.TextPart):
        return part.text or None
    if isinstance(part, parts.AttachmentPart):
        return _attachment(part.attachment) if part.attachment is not None else None
    if isinstance(part, parts.ToolCallPart):
        return ToolCall(part.name, dict(part.arguments), part.tool_call_id or "")
    if isinstance(part, parts.ToolResultPart):
        output = part.output if not part.exception else f"{part.output}\nError: {part.exception}"
        return ToolResult(part.tool_call_id or "", part.name, output)
    return None  # reasoning and provider-specific parts stay with the client


def _attachment(attachment: llm.Attachment) -> Attachment:
    media_type: str = attachment.resolve_type()  # type: ignore[no-untyped-call]
    if attachment.url and not attachment.content and not attachment.path:
        # The server fetches it only if its operator allows URLs; the client does not.
        return Attachment(media_type=media_type, url=attachment.url)
    # A path is read here: the server never reads files named by a client.
    content: bytes = attachment.content_bytes()  # type: ignore[no-untyped-call]
    return Attachment(media_type=media_type, content=content)


def _report(response: Response | AsyncResponse, result: ExecuteResult) -> None:
    metrics = result.metrics
    details = {"cost_usd": metrics.cost_usd} if metrics.cost_usd is not None else None
    response.set_usage(input=metrics.input_tokens, output=metrics.output_tokens, details=details)
    resolved = result.resolved_model or result.model
    if resolved:
        response.set_resolved_model(resolved)
    for call in result.tool_calls:
        # llm runs the tool (`llm -T`, chains) and sends its result in the next request.
        response.add_tool_call(
            llm.ToolCall(name=call.name, arguments=dict(call.arguments), tool_call_id=call.call_id)
        )


class _ProxyModelBase:
    def __init__(self, url: str, served: ModelInfo) -> None:
        self.url = url
        self.served_id = served.model_id
        self.model_id = PREFIX + served.model_id

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
                answer = client.stream(model=self.served_id, **request_of(prompt))
                yield from answer
                result = answer.result()
            else:
                result = client.execute(model=self.served_id, **request_of(prompt))
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
                    answer = client.stream(model=self.served_id, **request_of(prompt))
                    async for chunk in answer:
                        yield chunk
                    result = await answer.result()
                else:
                    result = await client.execute(model=self.served_id, **request_of(prompt))
                    yield result.text
            except ProxyClientError as exc:
                raise llm.ModelError(str(exc)) from exc
        _report(response, result)
