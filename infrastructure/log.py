"""Process logging set-up and the one-line-per-request log."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from domain.outcome import Method, RequestRecord

REQUEST_LOGGER = "llm_proxy.requests"

# What could end a log line early, rewrite it on a terminal, or reorder what a reader sees:
# C0 and C1 controls (newline, carriage return, ESC...), DEL, Unicode line and paragraph
# separators, and the bidirectional overrides and isolates.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every character that could forge or hide log lines written as an escape,
    so a line of the text log is always exactly one record."""
    # isprintable() is a fast C scan that is True for nearly every message.
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escaped, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (json escapes every control character). A record that
    carries `fields` is described by them; its message is then only the `event` name, so no
    value appears twice."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if isinstance(fields, _RequestFields):
            fields = fields.resolved()
        structured = isinstance(fields, Mapping)
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": getattr(record, "event", "") if structured else record.getMessage(),
        }
        if isinstance(fields, Mapping):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class SecondCachingFormatter(logging.Formatter):
    """The standard text format, with the date and time rendered once per second instead of
    once per line (localtime and strftime were a visible share of a request's cost).

    Messages often carry what clients sent (request ids, subjects, key ids, model names):
    control characters in the message are escaped, and every continuation line of a
    traceback is indented, so that no client can forge a line or send terminal escapes.
    """

    _cached_second = -1
    _cached_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time_text(record.created, int(record.msecs))

    def _time_text(self, created: float, msecs: int) -> str:
        second = int(created)
        if second != self._cached_second:
            self._cached_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._cached_second = second
        return f"{self._cached_text},{msecs:03d}"

    def line_for(self, created: float, levelname: str, name: str, message: str) -> str | None:
        """The line format() writes for a record of these facts without a traceback, or None
        where only a whole LogRecord will do (a format that names other attributes)."""
        fast = self._fast_format
        if fast is None:
            return None
        values: dict[str, object] = {
            # As LogRecord computes its msecs from its created time.
            "asctime": self._time_text(created, int((created - int(created)) * 1000)),
            "levelname": levelname,
            "name": name,
            "message": escape_controls(message),
        }
        if self._names_process:
            values["process"] = os.getpid()
        try:
            return fast % values
        except (KeyError, TypeError, ValueError):
            return None

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        # What logging.Formatter.format does for a record without a traceback or stack, in
        # one call instead of five (it runs for every request's line).
        fast = self._fast_format
        if fast is None or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = escape_controls(record.getMessage())
        if self._uses_time:
            record.asctime = self.formatTime(record)
        return fast % record.__dict__

    @functools.cached_property
    def _fast_format(self) -> str | None:
        style = self._style
        # Only a plain %-style format without defaults is filled in from the record directly.
        if type(style) is not logging.PercentStyle or getattr(style, "_defaults", None):
            return None
        return style._fmt

    @functools.cached_property
    def _names_process(self) -> bool:
        # Only worker processes sharing one output show their pid: no getpid() per line else.
        return "%(process)" in (self._fast_format or "")

    @functools.cached_property
    def _uses_time(self) -> bool:
        return self.usesTime()

    def formatException(self, ei: Any) -> str:
        lines = super().formatException(ei).split("\n")
        # An exception's message may hold client input too; after the first line, nothing in
        # a traceback starts at the left margin, where a reader expects a timestamp.
        return "\n".join(
            escape_controls(line if index == 0 or line[:1].isspace() else "  " + line)
            for index, line in enumerate(lines)
        )


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes formatted lines in batches: a write and flush per request line cost more than
    the rest of the proxy's own per-request work. A daemon thread flushes every
    `interval_s`, so a line is never held back longer than that; WARNING and above, and
    process exit (logging.shutdown), flush at once."""

    def __init__(self, stream: TextIO, interval_s: float = 0.1, max_lines: int = 512) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._interval_s = interval_s
        self._max_lines = max_lines
        self._stopping = threading.Event()
        self._flusher = self._start_flusher()
        _open_handlers.add(self)

    def _start_flusher(self) -> threading.Thread:
        flusher = threading.Thread(target=self._flush_periodically, name="log-flush", daemon=True)
        flusher.start()
        return flusher

    def _after_fork_in_child(self) -> None:
        # A forked child (a worker of `serve --workers`) has no flusher thread: only the thread
        # that forked survives a fork.
        if not self._stopping.is_set():
            self._pending = []
            self._flusher = self._start_flusher()

    def handle(self, record: logging.LogRecord) -> bool:
        # logging.Handler.handle holds the handler's lock around emit(); emit() here takes it
        # only to append, so formatting runs outside it and the lock is taken once, not twice.
        accepted = self.filter(record)
        if accepted:
            self.emit(accepted if isinstance(accepted, logging.LogRecord) else record)
        return bool(accepted)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line, urgent=record.levelno >= logging.WARNING)

    def write_line(self, line: str, *, urgent: bool = False) -> None:
        """Queue one formatted line; `urgent` ones (warnings and worse) are written at once."""
        with self._guard():
            self._pending.append(line)
            full = len(self._pending) >= self._max_lines
        if full or urgent:
            self.flush()

    def _guard(self) -> contextlib.AbstractContextManager[object]:
        # The flusher thread swaps the list out; without the lock a line appended to the old
        # list after the swap would be lost.
        return self.lock if self.lock is not None else contextlib.nullcontext()

    def flush(self) -> None:
        with self._guard():
            if not self._pending:
                return
            lines, self._pending = self._pending, []
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                # Nowhere left to log to (stream closed at exit); nothing sensible remains.
                pass

    def _flush_periodically(self) -> None:
        lock = self.lock
        while not self._stopping.wait(self._interval_s):
            # Never waits long for the lock: logging.shutdown() holds it while it closes this
            # handler, and close() waits for this thread, which would wait forever.
            if lock is not None and not lock.acquire(timeout=self._interval_s):
                continue
            try:
                self.flush()
            finally:
                if lock is not None:
                    lock.release()

    def close(self) -> None:
        """Stop the flusher thread and write what is pending; the stream stays open (it is
        usually stderr, which belongs to the process)."""
        self._stopping.set()
        if self._flusher is not threading.current_thread():
            self._flusher.join()
        self.flush()
        super().close()


# Handlers whose flusher a fork must flush before and restart after.
_open_handlers: weakref.WeakSet[BatchingStreamHandler] = weakref.WeakSet()


_held_over_fork: list[BatchingStreamHandler] = []


def _flush_before_fork() -> None:
    # What is pending now is written once, by the parent, not again by the child; and the
    # lock stays held over the fork, so that no flusher is halfway through writing to the
    # stream (whose own lock the child would then find taken forever).
    _held_over_fork[:] = list(_open_handlers)
    for handler in _held_over_fork:
        handler.acquire()
        handler.flush()


def _release_after_fork() -> None:
    for handler in _held_over_fork:
        handler.release()
    _held_over_fork.clear()


def _restart_after_fork() -> None:
    # logging gives every handler a new lock in the child before this runs.
    _held_over_fork.clear()
    for handler in list(_open_handlers):
        handler._after_fork_in_child()


os.register_at_fork(
    before=_flush_before_fork,
    after_in_parent=_release_after_fork,
    after_in_child=_restart_after_fork,
)


def configure_logging(level: str, fmt: str, *, show_pid: bool = False) -> None:
    """`show_pid` tells apart the interleaved lines of several worker processes."""
    # The logging cookbook's optimisations: facts nobody prints need not be gathered for
    # every record (the caller's source line is a stack walk).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = show_pid or fmt == "json"
    handler: logging.Handler = BatchingStreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        pid = " [%(process)d]" if show_pid else ""
        handler.setFormatter(
            SecondCachingFormatter(f"%(asctime)s %(levelname)s{pid} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for previous in root.handlers:
        # Only our own: other handlers (a test harness's) are not ours to close.
        if isinstance(previous, BatchingStreamHandler):
            previous.close()
    root.handlers[:] = [handler]
    root.setLevel(level)


class LoggingObserver:
    """Logs every finished request as one line; prompt and answer text only when the record
    carries them, which it does only when logging.log_prompts is on."""

    def __init__(self) -> None:
        self._log = logging.getLogger(REQUEST_LOGGER)

    def request_started(self, method: Method, transport: str) -> None:
        return None

    def request_finished(self, record: RequestRecord) -> None:
        # Checked first so a dropped line costs no formatting on the hot path. Past it, the
        # formatter decides what is built: the text line, or the fields for JSON.
        log = self._log
        if not log.isEnabledFor(logging.INFO):
            return
        handler = _sole_handler(log)
        if handler is not None and isinstance(handler.formatter, SecondCachingFormatter):
            # The usual set-up (our handler, the text format, nothing between): the line is
            # written straight to the handler. Through logging's machinery it cost several
            # times more, a visible share of the server's time under load.
            line = handler.formatter.line_for(
                time.time(), _INFO_NAME, log.name, str(_RequestLine(record))
            )
            if line is not None:
                handler.write_line(line)
                return
        # Built and handed to the handlers directly: Logger.info's own steps (the extra
        # mapping copied onto the record key by key, caller lookup) are for general callers.
        entry = logging.getLogRecordFactory()(
            log.name, logging.INFO, "", 0, _RequestLine(record), None, None
        )
        entry.fields = _RequestFields(record)
        entry.event = "request"
        log.handle(entry)


_INFO_NAME = logging.getLevelName(logging.INFO)


def _sole_handler(logger: logging.Logger) -> BatchingStreamHandler | None:
    """The one handler an INFO record of `logger` reaches, if it is one of ours and nothing on
    the way could drop, change or copy the record (a filter, another handler, a record
    factory); else None, and the record goes through logging as usual."""
    if logger.filters or logger.disabled or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    found: BatchingStreamHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not BatchingStreamHandler
                or handler.filters
                or handler.level > logging.INFO
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def request_fields(record: RequestRecord) -> dict[str, object]:
    """What the request log says about a request, by name; facts not known are None."""
    usage = record.usage
    fields: dict[str, object] = {
        "request_id": record.request_id,
        "method": record.method.value,
        "transport": record.transport,
        "model": record.model_id,
        "subject": record.subject,
        "outcome": record.outcome,
        "duration_ms": round(record.duration_s * 1000, 2),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }
    if record.cost_usd is not None:
        fields["cost_usd"] = record.cost_usd
    if record.first_chunk_s is not None:
        fields["first_chunk_ms"] = round(record.first_chunk_s * 1000, 2)
    if record.end_user is not None:
        # The client chose this text: quoted in text logs, so it cannot forge a line.
        fields["user"] = record.end_user
    if record.prompt is not None:
        fields["prompt"] = record.prompt
        fields["answer"] = record.answer
    return fields


class _RequestFields(Mapping[str, object]):
    """request_fields(record), worked out only if something reads them (the JSON formatter,
    a test): the text format never does."""

    __slots__ = ("_built", "_record")

    def __init__(self, record: RequestRecord) -> None:
        self._record = record
        self._built: dict[str, object] | None = None

    def resolved(self) -> dict[str, object]:
        if self._built is None:
            self._built = request_fields(self._record)
        return self._built

    def __getitem__(self, key: str) -> object:
        return self.resolved()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.resolved())

    def __len__(self) -> int:
        return len(self.resolved())


class _RequestLine:
    """The text form of a request's fields, `key=value ...` in request_fields' order without
    the unknown ones, built only when a text formatter asks for it."""

    __slots__ = ("_record",)

    def __init__(self, record: RequestRecord) -> None:
        self._record = record

    def __str__(self) -> str:
        # Written out rather than derived from request_fields: this runs for every request.
        record = self._record
        usage = record.usage
        line = [f"request_id={record.request_id} method={record.method.value}"]
        line.append(f"transport={record.transport}")
        if record.model_id is not None:
            line.append(f"model={record.model_id}")
        line.append(f"subject={record.subject} outcome={record.outcome}")
        line.append(f"duration_ms={round(record.duration_s * 1000, 2)}")
        if usage.input_tokens is not None:
            line.append(f"input_tokens={usage.input_tokens}")
        if usage.output_tokens is not None:
            line.append(f"output_tokens={usage.output_tokens}")
        if record.cost_usd is not None:
            line.append(f"cost_usd={record.cost_usd}")
        if record.first_chunk_s is not None:
            line.append(f"first_chunk_ms={round(record.first_chunk_s * 1000, 2)}")
        # repr keeps what clients sent quoted, so it cannot forge a line.
        if record.end_user is not None:
            line.append(f"user={record.end_user!r}")
        if record.prompt is not None:
            line.append(f"prompt={record.prompt!r}")
            if record.answer is not None:
                line.append(f"answer={record.answer!r}")
        return " ".join(line)
