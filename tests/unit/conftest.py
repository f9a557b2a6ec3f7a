"""Fixtures shared by the unit tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from infrastructure.log import BatchingStreamHandler
from tests.support.fake_proxy import FakeProxy


@pytest.fixture
def fake() -> Iterator[FakeProxy]:
    """A fake llm-proxy server on loopback, for client-side tests; each test sets its replies."""
    server = FakeProxy()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def root_logging_restored() -> Iterator[logging.Logger]:
    """The root logger, given back afterwards as it was: the test may configure logging."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        for handler in root.handlers:
            if isinstance(handler, BatchingStreamHandler):
                handler.close()
        root.handlers[:] = saved
        root.setLevel(level)
