"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_proxy import FakeProxy


@pytest.fixture
def fake() -> Iterator[FakeProxy]:
    """A fake llm-proxy server on loopback, for client-side tests; each test sets its replies."""
    server = FakeProxy()
    server.start()
    yield server
    server.stop()
