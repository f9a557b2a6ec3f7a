"""A tiny OpenAI-compatible chat completions server on loopback, for llm's OpenAI model path.

It answers with a fixed list of words, streamed as server-sent events when asked, and records
each request body so tests can check what the proxy sent upstream. Given `tool_calls`, a request
that offers tools and does not end with tool results is answered with those calls instead, the
way OpenAI does (whole, or streamed as a name then argument fragments).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


@dataclass
class StandIn:
    words: list[str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    # Seconds to wait before each streamed word, to test cancellation and time to first chunk.
    delay: float = 0.0
    # (name, arguments) of the tools to call when the request offers tools.
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def calls_tools(self, body: dict[str, Any]) -> bool:
        messages = body.get("messages") or [{}]
        return bool(self.tool_calls and body.get("tools") and messages[-1].get("role") != "tool")

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append(body)
            if not self.path.endswith("/chat/completions"):
                self.send_error(404)
                return
            model = body.get("model", "stand-in")
            usage = {
                "prompt_tokens": 7,
                "completion_tokens": len(state.words),
                "total_tokens": 7 + len(state.words),
            }
            if state.calls_tools(body):
                if body.get("stream"):
                    self._stream_tool_calls(model, usage)
                else:
                    self._whole_tool_calls(model, usage)
            elif body.get("stream"):
                self._stream(model, usage)
            else:
                self._whole(model, usage)

        def _whole_tool_calls(self, model: str, usage: dict[str, int]) -> None:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{index}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(arguments)},
                    }
                    for index, (name, arguments) in enumerate(state.tool_calls)
                ],
            }
            self._send_json(
                {
                    "id": "cmpl-2",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                    "usage": usage,
                }
            )

        def _stream_tool_calls(self, model: str, usage: dict[str, int]) -> None:
            self._start_events()
            base = {"id": "cmpl-2", "object": "chat.completion.chunk", "model": model}

            def delta(content: dict[str, Any], finish: str | None = None) -> None:
                self._event(
                    {
                        **base,
                        "created": int(time.time()),
                        "choices": [{"index": 0, "delta": content, "finish_reason": finish}],
                    }
                )

            for index, (name, arguments) in enumerate(state.tool_calls):
                text = json.dumps(arguments)
                half = len(text) // 2
                delta(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": f"call_{index}",
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
                for piece in (text[:half], text[half:]):
                    delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            delta({}, "tool_calls")
            self._event({**base, "created": int(time.time()), "choices": [], "usage": usage})
            self._event("[DONE]")
            self.close_connection = True

        def _start_events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()

        def _event(self, data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            self.wfile.write(f"data: {text}\n\n".encode())
            self.wfile.flush()

        def _send_json(self, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _whole(self, model: str, usage: dict[str, int]) -> None:
            self._send_json(
                {
                    "id": "cmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(state.words)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )

        def _stream(self, model: str, usage: dict[str, int]) -> None:
            self._start_events()
            event = self._event

            base = {"id": "cmpl-1", "object": "chat.completion.chunk", "model": model}
            try:
                for word in state.words:
                    if state.delay:
                        time.sleep(state.delay)
                    event(
                        {
                            **base,
                            "created": int(time.time()),
                            "choices": [
                                {"index": 0, "delta": {"content": word}, "finish_reason": None}
                            ],
                        }
                    )
                event(
                    {
                        **base,
                        "created": int(time.time()),
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    }
                )
                event({**base, "created": int(time.time()), "choices": [], "usage": usage})
                event("[DONE]")
            except (BrokenPipeError, ConnectionResetError):
                return
            self.close_connection = True

    return Handler


@contextmanager
def running_standin(words: list[str], delay: float = 0.0) -> Iterator[StandIn]:
    state = StandIn(words=words, delay=delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="openai-standin", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def llm_user_dir(directory: Path, *models: dict[str, Any]) -> Path:
    """An llm user directory whose extra-openai-models.yaml declares `models` (model_id,
    model_name, api_base...): how llm is told about an OpenAI-compatible server."""
    directory.mkdir()
    (directory / "extra-openai-models.yaml").write_text(yaml.safe_dump(list(models)))
    return directory
