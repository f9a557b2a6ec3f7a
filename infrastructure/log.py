"""Process logging set-up and the one-line-per-request log."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from typing import TextIO

from domain.outcome import Method, RequestRecord

REQUEST_LOGGER = "llm_proxy.requests"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class SecondCachingFormatter(logging.Formatter):
    """The standard text format, with the date and time rendered once per second instead of
    once per line (localtime and strftime were a visible share of a request's cost)."""

    _cached_second = -1
    _cached_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._cached_second:
            self._cached_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._cached_second = second
        return f"{self._cached_text},{int(record.msecs):03d}"


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
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="log-flush", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard():
            self._pending.append(line)
            full = len(self._pending) >= self._max_lines
        if full or record.levelno >= logging.WARNING:
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
        while True:
            time.sleep(self._interval_s)
            self.flush()


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
        # Checked first so a dropped line costs no formatting on the hot path.
        if not self._log.isEnabledFor(logging.INFO):
            return
        usage = record.usage
        duration_ms = round(record.duration_s * 1000, 2)
        fields: dict[str, object] = {
            "request_id": record.request_id,
            "method": record.method.value,
            "transport": record.transport,
            "model": record.model_id,
            "subject": record.subject,
            "outcome": record.outcome,
            "duration_ms": duration_ms,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        }
        # Built piece by piece rather than from `fields`: this runs once per request.
        message = (
            f"request_id={record.request_id} method={record.method.value}"
            f" transport={record.transport}"
            + (f" model={record.model_id}" if record.model_id is not None else "")
            + f" subject={record.subject} outcome={record.outcome} duration_ms={duration_ms}"
            + (f" input_tokens={usage.input_tokens}" if usage.input_tokens is not None else "")
            + (f" output_tokens={usage.output_tokens}" if usage.output_tokens is not None else "")
        )
        if record.cost_usd is not None:
            fields["cost_usd"] = record.cost_usd
            message += f" cost_usd={record.cost_usd}"
        if record.first_chunk_s is not None:
            first_chunk_ms = round(record.first_chunk_s * 1000, 2)
            fields["first_chunk_ms"] = first_chunk_ms
            message += f" first_chunk_ms={first_chunk_ms}"
        if record.prompt is not None:
            # repr keeps a multi-line prompt on the one line of its request in text logs.
            fields["prompt"] = record.prompt
            fields["answer"] = record.answer
            message += f" prompt={record.prompt!r} answer={record.answer!r}"
        self._log.info(message, extra={"fields": fields})
