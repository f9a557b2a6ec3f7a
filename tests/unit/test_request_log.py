"""The request log line: written straight to our handler in the usual set-up, through
logging's machinery otherwise, and the same line either way."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from domain.outcome import RequestRecord
from domain.usage import Usage
from infrastructure.log import REQUEST_LOGGER, BatchingStreamHandler, LoggingObserver
from infrastructure.log import configure_logging as configure
from tests.unit.fakes import request_record

NOW = 1_700_000_000.25


def _record(**changes: object) -> RequestRecord:
    fields: dict[str, object] = {
        "duration_s": 0.0123,
        "usage": Usage(2, 3),
        "end_user": "bob\nINFO forged",
    }
    fields.update(changes)
    return request_record(**fields)


class _Logged:
    def __init__(self, stream: io.StringIO, handler: BatchingStreamHandler) -> None:
        self.stream = stream
        self.handler = handler

    def lines(self) -> list[str]:
        self.handler.flush()
        return self.stream.getvalue().splitlines()


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch, root_logging_restored: logging.Logger) -> _Logged:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr("infrastructure.log.time.time", lambda: NOW)
    monkeypatch.setattr("logging.time.time", lambda: NOW)
    configure("INFO", "text")
    handler = root_logging_restored.handlers[0]
    assert isinstance(handler, BatchingStreamHandler)
    return _Logged(stream, handler)


def test_the_direct_line_is_the_line_logging_writes(
    logged: _Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    observer = LoggingObserver()
    record = _record()
    requests = logging.getLogger(REQUEST_LOGGER)
    handled: list[logging.LogRecord] = []

    def handle(entry: logging.LogRecord) -> None:
        handled.append(entry)
        logging.Logger.handle(requests, entry)

    monkeypatch.setattr(requests, "handle", handle)
    # pytest adds its own capturing handlers to the root logger while a test runs; the
    # server's set-up has only ours.
    monkeypatch.setattr(logging.getLogger(), "handlers", [logged.handler])

    observer.request_finished(record)
    assert handled == []
    # A filter (even one that lets everything through) sends the record through logging.
    logged.handler.addFilter(lambda _: True)
    observer.request_finished(record)
    assert len(handled) == 1

    direct, through_logging = logged.lines()
    assert direct == through_logging
    assert (
        " INFO llm_proxy.requests: request_id=r-1 method=unary transport=grpc model=echo "
        "subject=alice outcome=ok duration_ms=12.3 input_tokens=2 output_tokens=3" in direct
    )
    assert direct.endswith(",250 INFO" + direct.split(",250 INFO", 1)[1])
    # What the client chose stays quoted: no forged line.
    assert "user='bob\\nINFO forged'" in direct


def test_another_handler_gets_the_request_line_too(logged: _Logged) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        LoggingObserver().request_finished(_record())
    finally:
        logging.getLogger().removeHandler(keep)

    assert len(logged.lines()) == 1
    assert len(seen) == 1 and "request_id=r-1" in seen[0].getMessage()


def test_a_filter_on_the_request_logger_still_drops_lines(logged: _Logged) -> None:
    requests = logging.getLogger(REQUEST_LOGGER)
    drop_all = logging.Filter("nothing.matches")
    requests.addFilter(drop_all)
    try:
        LoggingObserver().request_finished(_record())
    finally:
        requests.removeFilter(drop_all)

    assert logged.lines() == []


def test_the_direct_line_carries_the_pid_when_workers_share_the_output(
    logged: _Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest hands the test its own stderr; the configuration must write to ours.
    monkeypatch.setattr(sys, "stderr", logged.stream)
    configure("INFO", "text", show_pid=True)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, BatchingStreamHandler)
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    observer = LoggingObserver()

    observer.request_finished(_record())
    handler.addFilter(lambda _: True)
    observer.request_finished(_record())
    handler.flush()

    direct, through_logging = logged.stream.getvalue().splitlines()
    assert direct == through_logging
    assert " INFO [" in direct
