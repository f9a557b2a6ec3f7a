"""An llm plugin whose models do what the prompt tells them, so tests can stage any behaviour.

A prompt that is a JSON object with a "script" key is followed:
    {"script": {"chunks": ["a", "b"], "delay": 0.01, "usage": {"input": 3, "output": 5},
                "fail_after": 1, "error": "boom", "error_type": "timeout|needs_key|validation",
                "hang": true, "probe": "name", "probe_file": "/path", "echo_system": true}}
- delay: seconds slept before each chunk; hang: sleep before the first chunk until the probe
  is released (or HANG_LIMIT_S passes); fail_after: raise after that many chunks ("error"
  alone means before the first); usage: reported only when the script gives it.
- echo_system: the first chunk is "[system: <system prompt>]"; repeat: the chunks are sent
  that many times over (a large answer from a small prompt).
- echo_messages: the answer is the JSON list of llm's prompt.messages (role and parts), which is
  what plugins written for llm 0.36 read the conversation from.
Any other prompt is echoed back in about three chunks with word-count usage; with a schema
the answer is {"schema_seen": <schema>}.

Register with llm.plugins.pm.register(module, name=...), for example through
LlmModelRegistry(plugin_modules=["tests.support.scripted_models"]).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import llm
from llm.models import EmbeddingModel
from pydantic import BaseModel

STEP_S = 0.01
HANG_LIMIT_S = 60.0


class ScriptedError(Exception):
    """What a script's "error" raises by default."""


class ScriptedTimeout(Exception):
    """Stands in for a client library's timeout error (the name is what matters)."""


class _Strict(BaseModel):
    count: int


@dataclass
class Probe:
    """What one scripted run did, observable from the test's thread."""

    name: str
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    # Set when the run was closed or cancelled before it finished.
    closed: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)
    # Ends a "hang" early, so no worker thread outlives its test.
    release: threading.Event = field(default_factory=threading.Event)
    implementation: str | None = None
    system: str | None = None
    _chunks_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def chunks_sent(self) -> int:
        with self._lock:
            return self._chunks_sent

    def count_chunk(self) -> int:
        with self._lock:
            self._chunks_sent += 1
            return self._chunks_sent


PROBES: dict[str, Probe] = {}
_PROBES_LOCK = threading.Lock()


def probe(name: str) -> Probe:
    """The probe called `name`, created on first use by either the test or the model."""
    with _PROBES_LOCK:
        found = PROBES.get(name)
        if found is None:
            found = PROBES[name] = Probe(name)
        return found


def release_all() -> None:
    with _PROBES_LOCK:
        for each in PROBES.values():
            each.release.set()


@dataclass(frozen=True)
class Script:
    chunks: tuple[str, ...]
    repeat: int = 1
    delay: float = 0.0
    usage: tuple[int, int] | None = None
    fail_after: int | None = None
    error: str = "scripted failure"
    error_type: str = ""
    hang: bool = False
    probe: str | None = None
    probe_file: str | None = None

    def each_chunk(self) -> Iterator[str]:
        return _each_chunk(self)


def _each_chunk(script: Script) -> Iterator[str]:
    # Made as they are sent, a copy each, as a real model's chunks are: each costs memory only
    # while something keeps it.
    for _ in range(script.repeat):
        for chunk in script.chunks:
            yield chunk.encode().decode() if script.repeat > 1 else chunk


def plan(prompt: Any) -> Script:
    text: str = prompt.prompt
    spec = _script_of(text)
    if spec is None:
        output = json.dumps({"schema_seen": prompt.schema}) if prompt.schema else text
        words_in = len(text.split()) + len((prompt.system or "").split())
        return Script(chunks=_thirds(output), usage=(words_in, len(output.split())))
    chunks = tuple(str(chunk) for chunk in spec.get("chunks", ()))
    if spec.get("echo_messages"):
        chunks = (json.dumps([message.to_dict() for message in prompt.messages]), *chunks)
    if spec.get("echo_system"):
        chunks = (f"[system: {prompt.system}]", *chunks)
    usage = spec.get("usage")
    fail_after = spec.get("fail_after")
    if fail_after is None and "error" in spec:
        fail_after = 0
    return Script(
        chunks=chunks,
        repeat=int(spec.get("repeat", 1)),
        delay=float(spec.get("delay", 0.0)),
        usage=(int(usage.get("input", 0)), int(usage.get("output", 0)))
        if usage is not None
        else None,
        fail_after=None if fail_after is None else int(fail_after),
        error=str(spec.get("error", "scripted failure")),
        error_type=str(spec.get("error_type", "")),
        hang=bool(spec.get("hang", False)),
        probe=spec.get("probe"),
        probe_file=spec.get("probe_file"),
    )


def _script_of(text: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    script = parsed.get("script") if isinstance(parsed, dict) else None
    return script if isinstance(script, dict) else None


def _thirds(text: str) -> tuple[str, ...]:
    size = max(1, -(-len(text) // 3))
    return tuple(text[i : i + size] for i in range(0, len(text), size)) or ("",)


def _failure(script: Script) -> Exception:
    if script.error_type == "timeout":
        return ScriptedTimeout(script.error)
    if script.error_type == "needs_key":
        return llm.NeedsKeyException(script.error)
    if script.error_type == "validation":
        try:
            _Strict.model_validate({"count": "not a number"})
        except Exception as error:
            return error
    return ScriptedError(script.error)


class _Run:
    """One run of a script: follows it and records its progress in its probe and probe file."""

    def __init__(self, prompt: Any, implementation: str) -> None:
        self.script = plan(prompt)
        self.probe = probe(self.script.probe) if self.script.probe else None
        if self.probe is not None:
            self.probe.implementation = implementation
            self.probe.system = prompt.system
        self.sent = 0
        self.began = time.monotonic()
        self.log("started")
        if self.probe is not None:
            self.probe.started.set()

    def log(self, line: str) -> None:
        if self.script.probe_file:
            with open(self.script.probe_file, "a", encoding="utf-8") as file:
                file.write(line + "\n")

    @contextlib.contextmanager
    def recording(self, *closed_by: type[BaseException]) -> Iterator[None]:
        """Records how the run ends: finished; closed by its consumer (or by `closed_by`);
        or failed."""
        closers: tuple[type[BaseException], ...] = (GeneratorExit, *closed_by)
        try:
            yield
        except closers:
            self._ended("closed")
            raise
        except Exception:
            self._ended("failed")
            raise
        self._ended("finished")

    def _ended(self, how: str) -> None:
        self.log(how)
        if self.probe is not None:
            getattr(self.probe, how).set()

    def hanging(self) -> bool:
        released = self.probe is not None and self.probe.release.is_set()
        return not released and time.monotonic() - self.began < HANG_LIMIT_S

    def chunks(self) -> Iterator[str]:
        """The script's chunks; raises the script's failure where the script says."""
        for chunk in self.script.each_chunk():
            self._fail_if_due()
            yield chunk
        self._fail_if_due()

    def sent_one(self, chunk: str) -> str:
        """`chunk`, counted as sent."""
        self.sent += 1
        if self.probe is not None:
            self.probe.count_chunk()
        self.log(f"chunk {self.sent}")
        return chunk

    def _fail_if_due(self) -> None:
        if self.script.fail_after is not None and self.sent >= self.script.fail_after:
            raise _failure(self.script)

    def set_usage(self, response: Any) -> None:
        if self.script.usage is not None:
            response.set_usage(input=self.script.usage[0], output=self.script.usage[1])


def _sleep_sync(seconds: float, keep_going: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + seconds
    while keep_going() and time.monotonic() < deadline:
        time.sleep(min(STEP_S, max(deadline - time.monotonic(), 0.0)))


def _run_sync(prompt: Any, response: Any, implementation: str) -> Iterator[str]:
    run = _Run(prompt, implementation)
    with run.recording():
        if run.script.hang:
            _sleep_sync(HANG_LIMIT_S, run.hanging)
        for chunk in run.chunks():
            _sleep_sync(run.script.delay)
            yield run.sent_one(chunk)
        run.set_usage(response)


async def _sleep_async(seconds: float, keep_going: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + seconds
    while keep_going() and time.monotonic() < deadline:
        await asyncio.sleep(min(STEP_S, max(deadline - time.monotonic(), 0.0)))


async def _run_async(prompt: Any, response: Any) -> AsyncGenerator[str, None]:
    run = _Run(prompt, "async")
    with run.recording(asyncio.CancelledError):
        if run.script.hang:
            await _sleep_async(HANG_LIMIT_S, run.hanging)
        for chunk in run.chunks():
            await _sleep_async(run.script.delay)
            yield run.sent_one(chunk)
        run.set_usage(response)


class _Capabilities:
    can_stream = True
    supports_schema = True


class Scripted(_Capabilities, llm.Model):
    model_id = "scripted"

    def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> Iterator[str]:
        return _run_sync(prompt, response, "sync")


class ScriptedAsyncSync(Scripted):
    """The sync half of scripted-async; the proxy should prefer the async half."""

    model_id = "scripted-async"


class ScriptedAsync(_Capabilities, llm.AsyncModel):
    model_id = "scripted-async"

    # Handing llm the generator itself, not a wrapper, means closing or cancelling the
    # response reaches _run_async directly rather than via garbage collection.
    def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        return _run_async(prompt, response)


@llm.hookimpl
def register_models(register: Callable[..., None]) -> None:
    register(Scripted())
    register(ScriptedAsyncSync(), ScriptedAsync(), aliases=("scripted-a",))


class TestEmbedding(EmbeddingModel):
    """The suite's embedding model: a text's length, word count and letter sum, so tests can
    tell which vector belongs to which text."""

    model_id = "test-embed"
    batch_size = 8

    def embed_batch(
        self, items: Iterable[str | bytes], *, key: str | None = None
    ) -> Iterator[list[float]]:
        for item in items:
            text = item.decode() if isinstance(item, bytes) else str(item)
            yield [float(len(text)), float(len(text.split())), float(sum(map(ord, text)) % 1000)]


@llm.hookimpl
def register_embedding_models(register: Callable[..., None]) -> None:
    register(TestEmbedding(), aliases=("te",))
