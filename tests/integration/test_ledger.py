"""The usage ledger over the wire: every request becomes a row; `usage report` sums them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.integration.conftest import ProxyFactory
from tests.integration.helpers import collect, kinds, request, script
from tests.support.commands import run_cli

ROOT = Path(__file__).resolve().parents[2]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--config", str(config))


async def test_each_request_is_a_row_whatever_its_outcome(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    path = tmp_path / "usage.sqlite3"
    proxy = await start_proxy({"ledger": {"path": str(path)}})
    ok = await proxy.stub.Execute(request("one two three", model="echo", request_id="req-ok"))
    assert ok.WhichOneof("result") == "success"
    await proxy.stub.Execute(request("x", model="no-such-model", request_id="req-unknown"))
    chunks = await collect(
        proxy.stub.StreamExecute(
            request(
                script(chunks=["a", "b"], usage={"input": 7, "output": 2}),
                model="scripted",
                request_id="req-s",
            )
        )
    )
    assert "complete" in kinds(chunks)
    await proxy.running.stop(1)

    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({"ledger": {"path": str(path)}}))
    done = cli(config, "usage", "report", "--by", "model", "--json")
    assert done.returncode == 0, done.stderr
    totals = {row["model"]: row for row in json.loads(done.stdout)}
    usage = ok.success.metrics
    assert totals["echo"]["requests"] == 1
    assert totals["echo"]["input_tokens"] == usage.input_tokens
    assert totals["echo"]["output_tokens"] == usage.output_tokens
    assert (totals["scripted"]["input_tokens"], totals["scripted"]["output_tokens"]) == (7, 2)
    assert (totals[None]["requests"], totals[None]["failed"]) == (1, 1)


def test_report_without_a_ledger_file_says_where_it_looked(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({"ledger": {"path": str(tmp_path / "none.sqlite3")}}))
    done = cli(config, "usage", "report")
    assert done.returncode == 1
    assert "no usage ledger at" in done.stderr
    assert "Traceback" not in done.stderr


async def test_postgres_server_refuses_to_start_before_migrate_then_records(
    start_proxy: ProxyFactory, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = {"ledger": {"backend": "postgres", "postgres_dsn": postgres_dsn}}
    with pytest.raises(OSError, match=r"schema version 0.*llm-proxy ledger migrate"):
        await start_proxy(settings)
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump(settings))
    first = cli(config, "ledger", "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied schema versions 1" in first.stdout
    assert postgres_dsn.rpartition("/")[2] in first.stdout
    again = cli(config, "ledger", "migrate")
    assert "already up to date" in again.stdout

    proxy = await start_proxy(settings)
    for index in range(3):
        await proxy.stub.Execute(request(f"hello {index}", model="echo"))
    await proxy.running.stop(1)
    connection = await asyncpg.connect(postgres_dsn)
    try:
        assert await connection.fetchval("SELECT COUNT(*) FROM llm_proxy_usage") == 3
    finally:
        await connection.close()
    done = cli(config, "usage", "report", "--csv")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[0] == "subject,requests,failed,input_tokens,output_tokens,cost_usd"
    )
    assert done.stdout.splitlines()[1].startswith("anonymous,3,0,")
