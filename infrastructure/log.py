"""Process logging set-up and the one-line-per-request log."""

from __future__ import annotations

import json
import logging
import sys
import time

from domain.outcome import RequestRecord

REQUEST_LOGGER = "llm_proxy.requests"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class LoggingObserver:
    """Logs every finished request as one line; never the prompt or answer text."""

    def __init__(self) -> None:
        self._log = logging.getLogger(REQUEST_LOGGER)

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
        self._log.info(
            " ".join(f"{key}={value}" for key, value in fields.items() if value is not None),
            extra={"fields": fields},
        )
