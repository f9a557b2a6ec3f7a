"""In-memory fakes of every application port, for unit tests (and anyone else who needs them).

Each fake does the simplest real thing the port promises and records what it was asked, so
tests assert on behaviour rather than on mock call lists. `Harness` wires a full set together
with the three use cases.

The gateway runs a *script*: a sequence of steps, each one of

* ``str`` - a text chunk (streamed as a TextChunk; concatenated by ``complete``)
* ``ToolCall`` - the model asks for a tool (streamed as is; collected by ``complete``)
* ``Usage`` - the usage the model reports (a UsageReport when streaming)
* ``Sleep(s)`` - a real ``asyncio.sleep``; gives timeouts something to fire on
* ``Advance(s)`` - move a FakeClock forward, to simulate model time without waiting
* ``Raise(err)`` - raise an error at that point (after the chunks before it)
* ``HANG`` - wait forever (until cancelled)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from application._common import PromptPipeline
from application.describe_server import DescribeServer
from application.execute_prompt import ExecutePrompt
from application.stream_prompt import StreamPrompt
from domain.answer import GatewayEvent, ModelOutput, TextChunk, UsageReport
from domain.catalog import Catalog, ModelDescription
from domain.errors import ProxyError
from domain.ledger import DailyUsage, GroupBy, UsageEntry, UsageTotal
from domain.outcome import Method, RequestRecord
from domain.policy import Limits, ServerPolicy
from domain.quota import QuotaPolicy
from domain.request import JsonObject, Message, ModelInvocation, PromptRequest, Role, ToolCall
from domain.usage import ModelPrice, Usage
from infrastructure.runtime import Reloadable

if TYPE_CHECKING:
    from application.ports import (
        Clock,
        IdGenerator,
        ModelCatalog,
        ModelGateway,
        PolicySource,
        RequestObserver,
    )

# --------------------------------------------------------------------------- clock and ids

DEFAULT_NOW = 1_700_000_000.0
DEFAULT_MONOTONIC = 5_000.0


class FakeClock:
    """Time stands still until a test (or a gateway Advance step) moves it."""

    def __init__(self, now: float = DEFAULT_NOW, monotonic: float = DEFAULT_MONOTONIC) -> None:
        self._now = now
        self._monotonic = monotonic

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move wall-clock and monotonic time forward together."""
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds
        self._monotonic += seconds


class SequentialIds:
    """Hands out `req-1`, `req-2`, ... and remembers what it issued."""

    def __init__(self, prefix: str = "req-") -> None:
        self._prefix = prefix
        self.issued: list[str] = []

    def new_request_id(self) -> str:
        request_id = f"{self._prefix}{len(self.issued) + 1}"
        self.issued.append(request_id)
        return request_id


# --------------------------------------------------------------------------- catalog, policy


# The server's own holders: a fixed snapshot, and `replace` stands in for a config reload.
FakeCatalog = Reloadable[Catalog]
FakePolicySource = Reloadable[ServerPolicy]


def model(
    model_id: str,
    *,
    aliases: Sequence[str] = (),
    provider: str = "test",
    supports_streaming: bool = True,
    display_name: str = "",
    max_context_length: int | None = None,
    supports_schema: bool = False,
) -> ModelDescription:
    return ModelDescription(
        model_id=model_id,
        provider=provider,
        supports_streaming=supports_streaming,
        display_name=display_name,
        aliases=tuple(aliases),
        max_context_length=max_context_length,
        supports_schema=supports_schema,
    )


def sample_catalog() -> Catalog:
    """Three models, the first the default, two aliases (`fast` → `small`, `big` → `large`)."""
    return Catalog(
        models=(
            model("echo", provider="llm-echo", display_name="Echo"),
            model("small", aliases=("fast",), provider="acme", max_context_length=8_000),
            model("large", aliases=("big",), provider="acme", supports_schema=True),
        ),
        default_model="echo",
        aliases={"fast": "small", "big": "large"},
    )


def sample_policy(
    *,
    limits: Limits | None = None,
    prices: Mapping[str, ModelPrice] | None = None,
    server_name: str = "test-proxy",
    server_version: str = "9.9.9",
    quotas: QuotaPolicy | None = None,
) -> ServerPolicy:
    return ServerPolicy(
        server_name=server_name,
        server_version=server_version,
        limits=limits if limits is not None else Limits(),
        prices=prices if prices is not None else {},
        quota_rules=quotas if quotas is not None else QuotaPolicy(),
    )


# --------------------------------------------------------------------------- requests


def prompt_request(
    *user: str,
    system: Sequence[str] = (),
    model: str | None = None,
    schema: JsonObject | None = None,
    request_id: str = "",
    options: JsonObject | None = None,
) -> PromptRequest:
    """The request the original protocol's fragments make: a system message, a user message."""
    messages = []
    if system:
        messages.append(Message.of_text(Role.SYSTEM, *system))
    if user:
        messages.append(Message.of_text(Role.USER, *user))
    return PromptRequest(
        messages=tuple(messages),
        model=model,
        schema=schema,
        request_id=request_id,
        options=options if options is not None else {},
    )


# --------------------------------------------------------------------------- observer


class RecordingObserver:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.started: list[Method] = []
        self.transports: list[str] = []

    def request_started(self, method: Method, transport: str) -> None:
        self.started.append(method)
        self.transports.append(transport)

    def request_finished(self, record: RequestRecord) -> None:
        self.records.append(record)

    @property
    def in_flight(self) -> int:
        return len(self.started) - len(self.records)

    def only(self) -> RequestRecord:
        """The single record so far; fails the test if there are none or several."""
        assert len(self.records) == 1, f"expected exactly one record, got {self.records!r}"
        return self.records[0]

    def only_with(self, **expected: object) -> RequestRecord:
        """The single record, whose fields must hold `expected` (compared together, so a
        failure shows every difference at once)."""
        record = self.only()
        assert {name: getattr(record, name) for name in expected} == expected
        return record


# --------------------------------------------------------------------------- gateway


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Advance:
    seconds: float


@dataclass(frozen=True, slots=True)
class Raise:
    error: BaseException


@dataclass(frozen=True, slots=True)
class Hang:
    pass


HANG = Hang()

Step = str | ToolCall | Usage | Sleep | Advance | Raise | Hang


@dataclass(slots=True)
class GatewayCall:
    """One call the gateway received and what became of it."""

    method: Literal["complete", "stream"]
    invocation: ModelInvocation
    # The caller's cancellation reached the model call.
    cancelled: bool = False
    # The call ran to the end of its script.
    finished: bool = False
    # For streams: the generator was closed (by exhaustion, aclose() or cancellation).
    closed: bool = False


class ScriptedGateway:
    """A ModelGateway that plays a script. By default it answers "Hello, world" in two chunks.

    `scripts` maps a model id to its own script; other models play `script`.
    """

    def __init__(
        self,
        script: Iterable[Step] = ("Hello, ", "world"),
        *,
        scripts: Mapping[str, Iterable[Step]] | None = None,
        clock: FakeClock | None = None,
    ) -> None:
        self.script: tuple[Step, ...] = tuple(script)
        self.scripts: dict[str, tuple[Step, ...]] = {
            model_id: tuple(steps) for model_id, steps in (scripts or {}).items()
        }
        self.clock = clock
        self.calls: list[GatewayCall] = []
        # Set whenever a call starts; tests wait on it before cancelling.
        self.entered = asyncio.Event()
        # Set when a call reaches a HANG step.
        self.hanging = asyncio.Event()

    @property
    def invocations(self) -> list[ModelInvocation]:
        return [call.invocation for call in self.calls]

    @property
    def last_call(self) -> GatewayCall:
        assert self.calls, "the gateway was never called"
        return self.calls[-1]

    def _script_for(self, invocation: ModelInvocation) -> tuple[Step, ...]:
        return self.scripts.get(invocation.model_id, self.script)

    async def _pause(self, step: Sleep | Advance | Raise | Hang) -> None:
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Advance):
            if self.clock is None:
                raise AssertionError("an Advance step needs ScriptedGateway(clock=...)")
            self.clock.advance(step.seconds)
        elif isinstance(step, Raise):
            raise step.error
        else:
            self.hanging.set()
            await asyncio.Event().wait()

    def _start(self, method: Literal["complete", "stream"], inv: ModelInvocation) -> GatewayCall:
        call = GatewayCall(method, inv)
        self.calls.append(call)
        self.entered.set()
        return call

    async def complete(self, invocation: ModelInvocation) -> ModelOutput:
        call = self._start("complete", invocation)
        text: list[str] = []
        tool_calls: list[ToolCall] = []
        usage = Usage()
        try:
            for step in self._script_for(invocation):
                if isinstance(step, str):
                    text.append(step)
                elif isinstance(step, ToolCall):
                    tool_calls.append(step)
                elif isinstance(step, Usage):
                    usage = step
                else:
                    await self._pause(step)
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        call.finished = True
        return ModelOutput("".join(text), usage, tool_calls=tuple(tool_calls))

    async def stream(self, invocation: ModelInvocation) -> AsyncGenerator[GatewayEvent, None]:
        call = self._start("stream", invocation)
        try:
            for step in self._script_for(invocation):
                if isinstance(step, str):
                    yield TextChunk(step)
                elif isinstance(step, ToolCall):
                    yield step
                elif isinstance(step, Usage):
                    yield UsageReport(step)
                else:
                    await self._pause(step)
            call.finished = True
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            call.closed = True


# --------------------------------------------------------------------------- wiring


@dataclass
class Harness:
    """A full set of fakes and the use cases built on them. Change any field before use."""

    catalog: FakeCatalog = field(default_factory=lambda: FakeCatalog(sample_catalog()))
    policy: FakePolicySource = field(default_factory=lambda: FakePolicySource(sample_policy()))
    clock: FakeClock = field(default_factory=FakeClock)
    ids: SequentialIds = field(default_factory=SequentialIds)
    observer: RecordingObserver = field(default_factory=RecordingObserver)
    gateway: ScriptedGateway = field(default_factory=ScriptedGateway)

    def __post_init__(self) -> None:
        if self.gateway.clock is None:
            self.gateway.clock = self.clock

    def script(self, *steps: Step) -> ScriptedGateway:
        """Replace the gateway's script (keeps the call history)."""
        self.gateway.script = steps
        return self.gateway

    def set_limits(self, limits: Limits) -> None:
        self.policy.replace(dataclasses.replace(self.policy.current(), limits=limits))

    def set_prices(self, prices: Mapping[str, ModelPrice]) -> None:
        self.policy.replace(dataclasses.replace(self.policy.current(), prices=prices))

    @property
    def pipeline(self) -> PromptPipeline:
        return PromptPipeline(
            catalog=self.catalog, policy=self.policy, clock=self.clock, ids=self.ids
        )

    @property
    def execute(self) -> ExecutePrompt:
        return ExecutePrompt(self.pipeline, self.gateway, self.observer)

    @property
    def stream(self) -> StreamPrompt:
        return StreamPrompt(self.pipeline, self.gateway, self.observer)

    @property
    def describe(self) -> DescribeServer:
        return DescribeServer(self.catalog, self.policy)


if TYPE_CHECKING:
    # mypy proves here that every fake satisfies its port.
    def _conforms(
        gateway: ScriptedGateway,
        catalog: FakeCatalog,
        policy: FakePolicySource,
        clock: FakeClock,
        ids: SequentialIds,
        observer: RecordingObserver,
    ) -> tuple[ModelGateway, ModelCatalog, PolicySource, Clock, IdGenerator, RequestObserver]:
        return gateway, catalog, policy, clock, ids, observer


class FakeLedgerSink:
    """A ledger store in memory; `failures` makes the next that many writes raise, and
    `block` holds every write until it is set."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[UsageEntry]] = []
        self.failures = failures
        self.attempts = 0
        self.opened = False
        self.closed = False
        self.block: asyncio.Event | None = None

    @property
    def rows(self) -> list[UsageEntry]:
        return [row for batch in self.batches for row in batch]

    async def open(self) -> None:
        self.opened = True

    async def write(self, rows: Sequence[UsageEntry]) -> None:
        self.attempts += 1
        if self.block is not None:
            await self.block.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store unavailable")
        self.batches.append(list(rows))

    async def totals(self, since: float, group_by: GroupBy) -> list[UsageTotal]:
        return []

    async def daily_usage(self, since: float) -> list[DailyUsage]:
        return []

    async def close(self) -> None:
        self.closed = True


def usage_entry(request_id: str = "r1", **changes: Any) -> UsageEntry:
    entry = UsageEntry(
        time=DEFAULT_NOW,
        request_id=request_id,
        transport="grpc",
        kind="unary",
        subject="alice",
        team=None,
        model="echo",
        outcome="ok",
        input_tokens=3,
        output_tokens=5,
        cost_usd=None,
        duration_s=0.01,
        first_chunk_s=None,
    )
    return dataclasses.replace(entry, **changes)


# --------------------------------------------------------------------------- embeddings


class FakeEmbeddings:
    """Embedding models that return, for each text, (its length, its number of words)."""

    def __init__(self, *models: ModelDescription, fail: ProxyError | None = None) -> None:
        self._models = models or (model("embed-small", aliases=("small",)),)
        self.fail = fail
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def models(self) -> tuple[ModelDescription, ...]:
        return self._models

    async def embed(
        self, model_id: str, inputs: tuple[str, ...]
    ) -> tuple[tuple[tuple[float, ...], ...], Usage]:
        self.calls.append((model_id, inputs))
        if self.fail is not None:
            raise self.fail
        vectors = tuple((float(len(text)), float(len(text.split()))) for text in inputs)
        return vectors, Usage(sum(len(text.split()) for text in inputs), 0)


def request_record(**changes: object) -> RequestRecord:
    """A finished request's record: a unary echo call by alice, unless `changes` say otherwise."""
    fields: dict[str, object] = {
        "method": Method.UNARY,
        "transport": "grpc",
        "request_id": "r-1",
        "subject": "alice",
        "model_id": "echo",
        "outcome": "ok",
        "duration_s": 0.01,
    }
    fields.update(changes)
    return RequestRecord(**fields)  # type: ignore[arg-type]
