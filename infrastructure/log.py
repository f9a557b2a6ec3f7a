"""Process logging set-up and the one-line-per-request log."""

from __future__ import annotations

import json
import logging
import sys
import time

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


def configure_logging(level: str, fmt: str, *, show_pid: bool = False) -> None:
    """`show_pid` tells apart the interleaved lines of several worker processes."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        pid = " [%(process)d]" if show_pid else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{pid} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class LoggingObserver:
    """Logs every finished request as one line; prompt and answer text only when the record
    carries them, which it does only when logging.log_prompts is on."""

    def __init__(self) -> None:
        self._log = logging.getLogger(REQUEST_LOGGER)

    def request_started(self, method: Method) -> None:
        return None

    def request_finished(self, record: RequestRecord) -> None:
        # Checked first so a dropped line costs no formatting on the hot path.
        if not self._log.isEnabledFor(logging.INFO):
            return
        usage = record.usage
        fields = {
            "request_id": record.request_id,
            "method": record.method.value,
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
        message = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        if record.prompt is not None:
            # repr keeps a multi-line prompt on the one line of its request in text logs.
            fields["prompt"] = record.prompt
            fields["answer"] = record.answer
            message += f" prompt={record.prompt!r} answer={record.answer!r}"
        self._log.info(message, extra={"fields": fields})
