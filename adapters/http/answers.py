"""The proxy's answers in OpenAI's chat completion shapes, whole and as stream chunks."""

from __future__ import annotations

import json
from dataclasses import dataclass

from domain.answer import Answer, FinishReason, StreamFinished
from domain.catalog import ModelDescription
from domain.request import ToolCall
from domain.usage import Usage


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def call_id(request_id: str, index: int, call: ToolCall) -> str:
    # OpenAI clients match results to calls by id, so a call the model left unnamed gets one.
    return call.call_id or f"call_{request_id[:24]}_{index}"


def tool_call(request_id: str, index: int, call: ToolCall) -> dict[str, object]:
    return {
        "id": call_id(request_id, index, call),
        "type": "function",
        "function": {"name": call.name, "arguments": _arguments(call)},
    }


def usage(value: Usage) -> dict[str, int]:
    prompt = value.input_tokens or 0
    completion = value.output_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion(answer: Answer) -> dict[str, object]:
    message: dict[str, object] = {
        "role": "assistant",
        # OpenAI sends null content when the model only asked for tools.
        "content": answer.text if answer.text or not answer.tool_calls else None,
        "refusal": None,
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            tool_call(answer.request_id, index, call)
            for index, call in enumerate(answer.tool_calls)
        ]
    return {
        "id": completion_id(answer.request_id),
        "object": "chat.completion",
        "created": answer.metrics.timestamp,
        "model": answer.model_id,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": answer.finish_reason.value,
                "logprobs": None,
            }
        ],
        "usage": usage(answer.metrics.usage),
        "system_fingerprint": None,
    }


@dataclass(slots=True)
class ChunkWriter:
    """Builds the `data: ...` events of one streamed completion, OpenAI's way."""

    request_id: str
    model_id: str
    created: int
    tool_calls: int = 0

    def _event(self, choices: list[object], **extra: object) -> bytes:
        chunk: dict[str, object] = {
            "id": completion_id(self.request_id),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_id,
            "system_fingerprint": None,
            "choices": choices,
            **extra,
        }
        return b"data: " + _dumps(chunk) + b"\n\n"

    def _delta(self, delta: dict[str, object], finish: str | None = None) -> bytes:
        return self._event(
            [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        )

    def role(self) -> bytes:
        return self._delta({"role": "assistant", "content": ""})

    def text(self, text: str) -> bytes:
        return self._delta({"content": text})

    def tool_call(self, call: ToolCall) -> bytes:
        """The call's id and name first, then its arguments, as OpenAI streams them."""
        index = self.tool_calls
        self.tool_calls += 1
        head = {
            "index": index,
            "id": call_id(self.request_id, index, call),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        arguments = {"index": index, "function": {"arguments": _arguments(call)}}
        return self._delta({"tool_calls": [head]}) + self._delta({"tool_calls": [arguments]})

    def finished(self, event: StreamFinished) -> bytes:
        return self._delta({}, finish=event.finish_reason.value)

    def usage(self, event: StreamFinished) -> bytes:
        return self._event([], usage=usage(event.metrics.usage))


DONE = b"data: [DONE]\n\n"


def stream_error(body: dict[str, object]) -> bytes:
    """An error once the answer has started: the status line is gone, so it travels in-band."""
    return b"data: " + _dumps(body) + b"\n\n"


def model_entry(model: ModelDescription, name: str | None = None) -> dict[str, object]:
    return {
        "id": name or model.model_id,
        "object": "model",
        "created": 0,
        "owned_by": model.provider or "llm-proxy",
    }


def _arguments(call: ToolCall) -> str:
    return json.dumps(dict(call.arguments), ensure_ascii=False, separators=(",", ":"))


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


__all__ = ["DONE", "ChunkWriter", "FinishReason", "completion", "model_entry", "stream_error"]
