"""ModelInvocation -> one llm prompt call, the way llm's own conversations make it.

The turn to answer (the last user message, and the tool results just before it) goes in
llm's per-turn arguments - `fragments`, `attachments`, `tool_results` - so plugins that read
only `prompt.prompt` and `prompt.system` still see it. Earlier turns go in `messages=` (what
llm 0.36 plugins read), and as the finished responses of a conversation (what older plugins
read from `conversation.responses`). Options go only through `options=`: never as keyword
arguments, where llm would take a `key` for the provider's API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llm
from llm import parts

from domain.request import (
    Attachment,
    Message,
    ModelInvocation,
    Role,
    Text,
    ToolCall,
    ToolResult,
)
from domain.value import value_object


@value_object
class LlmCall:
    """Everything one prompt needs, built before the model runs; start() runs nothing yet."""

    # The model, or a conversation holding the earlier turns.
    target: Any
    kwargs: dict[str, Any]

    def start(self) -> Any:
        return self.target.prompt(**self.kwargs)


@value_object
class _Turns:
    system: list[str]
    history: list[Message]
    tool_results: list[ToolResult]
    final_user: Message | None


def build_call(invocation: ModelInvocation, model: Any, *, stream: bool) -> LlmCall:
    messages = invocation.messages
    if len(messages) == 1 and not (invocation.schema or invocation.tools or invocation.options):
        only = messages[0]
        if only.role is Role.USER and all(type(part) is Text for part in only.parts):
            # The original protocol's whole request, and most requests: one user turn of text.
            return LlmCall(
                model,
                {"stream": stream, "fragments": list(only.texts()), "system_fragments": None},
            )
    turns = _split(messages)
    kwargs: dict[str, Any] = {
        "stream": stream,
        # Fragments rather than one prompt string: llm joins them as it does for its own CLI.
        "fragments": list(turns.final_user.texts()) if turns.final_user is not None else [],
        "system_fragments": turns.system or None,
    }
    if turns.final_user is not None:
        attachments = [_attachment(p) for p in turns.final_user.parts if isinstance(p, Attachment)]
        if attachments:
            kwargs["attachments"] = attachments
    if turns.tool_results:
        kwargs["tool_results"] = [_tool_result(result) for result in turns.tool_results]
    if invocation.schema is not None:
        kwargs["schema"] = dict(invocation.schema)
    if invocation.tools:
        # No implementation: the model can only ask; the client runs the tool.
        kwargs["tools"] = [
            llm.Tool(
                name=tool.name,
                description=tool.description or None,
                input_schema=dict(tool.input_schema),
            )
            for tool in invocation.tools
        ]
    if invocation.options:
        kwargs["options"] = dict(invocation.options)
    if not turns.history:
        return LlmCall(model, kwargs)
    chain = [parts.Message("system", [parts.TextPart(text) for text in turns.system])]
    chain = chain if turns.system else []
    kwargs["messages"] = chain + [_message(message) for message in turns.history]
    return LlmCall(_conversation(model, turns), kwargs)


def tool_calls_of(messages: Sequence[Any]) -> tuple[ToolCall, ...]:
    """The calls a finished llm response asks the client to run (not those its provider ran)."""
    return tuple(
        ToolCall(name=part.name, arguments=part.arguments or {}, call_id=part.tool_call_id or "")
        for message in messages
        for part in message.parts
        if isinstance(part, parts.ToolCallPart) and not part.server_executed
    )


def _split(messages: Sequence[Message]) -> _Turns:
    system = [
        text for message in messages if message.role is Role.SYSTEM for text in message.texts()
    ]
    rest = [message for message in messages if message.role is not Role.SYSTEM]
    end = len(rest)
    final_user = None
    if rest and rest[-1].role is Role.USER:
        final_user = rest[-1]
        end -= 1
    start = end
    while start > 0 and rest[start - 1].role is Role.TOOL:
        start -= 1
    tool_results = [
        part
        for message in rest[start:end]
        for part in message.parts
        if isinstance(part, ToolResult)
    ]
    return _Turns(system, rest[:start], tool_results, final_user)


def _conversation(model: Any, turns: _Turns) -> Any:
    """A conversation whose finished responses are the earlier turns, as llm would have
    recorded them had it run them itself."""
    conversation = model.conversation()
    response_class: Any = (
        llm.AsyncResponse if isinstance(model, llm.AsyncModel | llm.AsyncKeyModel) else llm.Response
    )
    chain: list[Any] = (
        [parts.Message("system", [parts.TextPart(text) for text in turns.system])]
        if turns.system
        else []
    )
    inputs: list[Message] = []
    for message in turns.history:
        chain.append(_message(message))
        if message.role is not Role.ASSISTANT:
            inputs.append(message)
            continue
        data: dict[str, Any] = {
            "model": model.model_id,
            "prompt": {"messages": [each.to_dict() for each in chain[:-1]], "options": {}},
            "messages": [chain[-1].to_dict()],
        }
        response = response_class.from_dict(data, model=model)
        # What the turn's user said, where plugins that predate messages= look for it.
        prompt = response.prompt
        prompt.fragments = [
            text for each in inputs if each.role is Role.USER for text in each.texts()
        ]
        prompt.attachments = [
            _attachment(part)
            for each in inputs
            for part in each.parts
            if isinstance(part, Attachment)
        ]
        prompt.tool_results = [
            _tool_result(part)
            for each in inputs
            for part in each.parts
            if isinstance(part, ToolResult)
        ]
        prompt.system_fragments = list(turns.system)
        conversation.responses.append(response)
        inputs = []
    return conversation


def _message(message: Message) -> Any:
    converted: list[Any] = []
    for part in message.parts:
        if isinstance(part, Text):
            converted.append(parts.TextPart(text=part.text))
        elif isinstance(part, Attachment):
            converted.append(parts.AttachmentPart(attachment=_attachment(part)))
        elif isinstance(part, ToolCall):
            converted.append(
                parts.ToolCallPart(
                    name=part.name,
                    arguments=dict(part.arguments),
                    tool_call_id=part.call_id or None,
                )
            )
        else:
            converted.append(
                parts.ToolResultPart(
                    name=part.name, output=part.output, tool_call_id=part.call_id or None
                )
            )
    return parts.Message(message.role.value, converted)


def _attachment(attachment: Attachment) -> Any:
    # type is always given, so llm never probes a URL (HEAD request) to guess it.
    return llm.Attachment(type=attachment.base_type, content=attachment.content, url=attachment.url)


def _tool_result(result: ToolResult) -> Any:
    return llm.ToolResult(
        name=result.name, output=result.output, tool_call_id=result.call_id or None
    )
