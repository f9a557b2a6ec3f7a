"""The suite's own Redis and PostgreSQL: reachable, private, and gone after teardown."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio

from tests.support.services import PrivateRedis, Services, started


async def test_redis_and_postgres_answer_on_loopback(redis_url: str, postgres_dsn: str) -> None:
    assert urlsplit(redis_url).hostname == "127.0.0.1"
    assert urlsplit(postgres_dsn).hostname == "127.0.0.1"
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()
    connection = await asyncpg.connect(postgres_dsn)
    try:
        assert await connection.fetchval("SELECT 40 + 2") == 42
    finally:
        await connection.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_script_stops_what_it_started(tmp_path: Path) -> None:
    with started(tmp_path / "services") as services:
        ports = [urlsplit(services.redis_url).port, urlsplit(services.postgres_dsn).port]
        assert all(port is not None and _listening(port) for port in ports)
    assert not any(port is not None and _listening(port) for port in ports)


def test_private_redis_stops_and_restarts_on_its_port(services: Services, tmp_path: Path) -> None:
    server = PrivateRedis(services.redis_server, tmp_path)
    server.start()
    try:
        assert _listening(server.port)
        server.stop()
        assert not _listening(server.port)
        server.start()
        assert _listening(server.port)
    finally:
        server.stop()
