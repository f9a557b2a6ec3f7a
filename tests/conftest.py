"""Fixtures for the whole suite. Keep additions small: each area has its own conftest."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.services import PrivateRedis, Services, from_environment, started

# Directories the suite's processes use instead of the developer's own, by the variable that
# points at them.
_PRIVATE_DIRECTORIES = {
    # llm's keys, aliases and default model.
    "LLM_USER_PATH": "llm-user",
    # Where a server started with default auth settings keeps its generated JWT secret.
    "XDG_CONFIG_HOME": "xdg-config",
    # Where a server with default settings keeps its usage ledger (SQLite).
    "XDG_DATA_HOME": "xdg-data",
}


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing the suite runs reads or writes the developer's own files, and servers started as
    processes serve HTTP on a free port, never on 8080, which a server of the developer's own
    (or another test run) may hold."""
    with pytest.MonkeyPatch.context() as patch:
        for variable, name in _PRIVATE_DIRECTORIES.items():
            patch.setenv(variable, str(tmp_path_factory.mktemp(name)))
        patch.setenv("LLM_PROXY_HTTP__PORT", "0")
        yield


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Redis and PostgreSQL: those `make check` started, or, when pytest runs on its own, a
    pair started now by the same script and stopped at the end of the session."""
    exported = from_environment(os.environ)
    if exported is not None:
        yield exported
        return
    with started(tmp_path_factory.mktemp("services")) as services:
        yield services


@pytest.fixture
async def redis_url(services: Services) -> str:
    """The shared Redis, emptied before each test so that no test sees another's counters."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(services.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return services.redis_url


@pytest.fixture
async def postgres_dsn(services: Services) -> AsyncIterator[str]:
    """A database of this test's own on the shared PostgreSQL server, dropped afterwards."""
    import asyncpg

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(services.postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = services.postgres_dsn.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(services.postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def private_redis(services: Services, tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, started; the test may stop and restart it."""
    server = PrivateRedis(services.redis_server, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
