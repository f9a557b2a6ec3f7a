"""The request log's batching handler and cached-time formatter keep every line, in order."""

from __future__ import annotations

import io
import logging
import time

from infrastructure.log import BatchingStreamHandler, SecondCachingFormatter


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_info_lines_are_written_in_order_within_the_interval() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval_s=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = _logger(handler, "test.batching.order")
    for index in range(100):
        logger.info("line %d", index)
    deadline = time.monotonic() + 2
    while stream.getvalue().count("\n") < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(100)]


def test_warnings_flush_at_once_with_what_came_before() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval_s=60)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = _logger(handler, "test.batching.warning")
    logger.info("first")
    assert stream.getvalue() == ""
    logger.warning("second")
    assert stream.getvalue().splitlines() == ["INFO first", "WARNING second"]


def test_a_full_batch_is_written_without_waiting() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval_s=60, max_lines=10)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = _logger(handler, "test.batching.full")
    for index in range(10):
        logger.info("n%d", index)
    assert len(stream.getvalue().splitlines()) == 10


def test_cached_time_matches_the_standard_formatter() -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    standard = logging.Formatter(fmt)
    cached = SecondCachingFormatter(fmt)
    for created in (1_700_000_000.123, 1_700_000_000.987, 1_700_000_001.5):
        record = logging.LogRecord("n", logging.INFO, __file__, 1, "msg", (), None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert cached.format(record) == standard.format(record)
