"""The log's batching handler and formatters: every line kept, in order, once, and the
flusher thread stopped when the handler is closed."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from infrastructure.log import (
    BatchingStreamHandler,
    JsonFormatter,
    SecondCachingFormatter,
    configure_logging,
)


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


@dataclass
class Batching:
    stream: io.StringIO
    handler: BatchingStreamHandler
    logger: logging.Logger


MakeBatching = Callable[..., Batching]


@pytest.fixture
def batching(request: pytest.FixtureRequest) -> Iterator[MakeBatching]:
    """A BatchingStreamHandler writing to a string, behind a logger of the test's own; closed
    (its flusher thread stopped) at the end."""
    made: list[BatchingStreamHandler] = []

    def make(fmt: str = "%(message)s", **options: Any) -> Batching:
        stream = io.StringIO()
        handler = BatchingStreamHandler(stream, **options)
        handler.setFormatter(logging.Formatter(fmt))
        made.append(handler)
        return Batching(stream, handler, _logger(handler, f"test.batching.{request.node.name}"))

    yield make
    for handler in made:
        handler.close()


def test_info_lines_are_written_in_order_within_the_interval(batching: MakeBatching) -> None:
    made = batching(interval_s=0.05)
    stream = made.stream
    for index in range(100):
        made.logger.info("line %d", index)
    deadline = time.monotonic() + 2
    while stream.getvalue().count("\n") < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(100)]


def test_warnings_flush_at_once_with_what_came_before(batching: MakeBatching) -> None:
    made = batching("%(levelname)s %(message)s", interval_s=60)
    made.logger.info("first")
    assert made.stream.getvalue() == ""
    made.logger.warning("second")
    assert made.stream.getvalue().splitlines() == ["INFO first", "WARNING second"]


def test_a_full_batch_is_written_without_waiting(batching: MakeBatching) -> None:
    made = batching(interval_s=60, max_lines=10)
    for index in range(10):
        made.logger.info("n%d", index)
    assert len(made.stream.getvalue().splitlines()) == 10


def test_cached_time_matches_the_standard_formatter() -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    standard = logging.Formatter(fmt)
    cached = SecondCachingFormatter(fmt)
    for created in (1_700_000_000.123, 1_700_000_000.987, 1_700_000_001.5):
        record = logging.LogRecord("n", logging.INFO, __file__, 1, "msg", (), None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert cached.format(record) == standard.format(record)


def test_close_stops_the_flusher_and_writes_what_is_pending(batching: MakeBatching) -> None:
    made = batching(interval_s=60)
    made.logger.info("pending")
    flusher = made.handler._flusher

    made.handler.close()

    assert not flusher.is_alive()
    assert made.stream.getvalue() == "pending\n"


def test_closing_with_the_lock_held_does_not_wait_for_a_flusher_blocked_on_it(
    batching: MakeBatching,
) -> None:
    # logging.shutdown() (at process exit) takes each handler's lock, then closes it.
    made = batching(interval_s=0.01)
    made.logger.info("pending")
    handler = made.handler
    flusher = handler._flusher
    closed = threading.Event()

    def shut_down() -> None:
        handler.acquire()
        try:
            # Long enough for the flusher to wake up and find the lock taken.
            time.sleep(0.1)
            handler.flush()
            handler.close()
        finally:
            handler.release()
        closed.set()

    closer = threading.Thread(target=shut_down, daemon=True)
    closer.start()
    # A deadlock never sets it; a working close() takes milliseconds.
    assert closed.wait(10), "close() waited forever for the flusher thread"
    assert not flusher.is_alive()
    assert made.stream.getvalue() == "pending\n"


def test_reconfiguring_closes_the_previous_handler_only(
    root_logging_restored: logging.Logger,
) -> None:
    root = root_logging_restored
    configure_logging("INFO", "text")
    first = root.handlers[0]
    assert isinstance(first, BatchingStreamHandler)
    root.addHandler(logging.NullHandler())
    configure_logging("INFO", "text")
    assert not first._flusher.is_alive()
    assert root.handlers != [first]


def _record(message: str, *, fields: dict[str, object] | None = None) -> logging.LogRecord:
    record = logging.LogRecord("llm_proxy.requests", logging.INFO, __file__, 1, message, (), None)
    if fields is not None:
        record.fields = fields
        record.event = "request"
    return record


def test_a_json_request_line_carries_each_field_once() -> None:
    fields: dict[str, object] = {"request_id": "r-17", "subject": "alice", "model": "echo"}
    line = JsonFormatter().format(
        _record("request_id=r-17 subject=alice model=echo", fields=fields)
    )

    entry = json.loads(line)
    assert entry["message"] == "request"
    assert entry["request_id"] == "r-17"
    assert line.count("r-17") == 1
    assert line.count("alice") == 1


def test_a_json_line_without_fields_keeps_its_message() -> None:
    entry = json.loads(JsonFormatter().format(_record("listening on 127.0.0.1:1")))
    assert entry["message"] == "listening on 127.0.0.1:1"


def test_a_forked_child_logs_through_its_own_flusher_and_repeats_nothing() -> None:
    """Workers of `serve --workers` are forked from a supervisor whose handler has a flusher
    thread; only the forking thread survives a fork."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = BatchingStreamHandler(stream, interval_s=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = _logger(handler, "test.batching.fork")
    logger.info("before the fork, in %d", os.getpid())
    pid = os.fork()
    if pid == 0:  # the child: an INFO line, left to the flusher, then a hard exit
        try:
            logger.info("from the child, %d", os.getpid())
            time.sleep(0.5)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    handler.close()
    stream.close()
    with os.fdopen(read_end) as lines:
        written = lines.read().splitlines()
    assert written == [f"before the fork, in {os.getpid()}", f"from the child, {pid}"]
