"""Budgets and token limits over the wire: concurrency, streams (cancelled ones too), restarts."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from domain.quota import applicable_limits, charges_for
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import Proxy, ProxyFactory
from tests.integration.helpers import read_chunk, request, script
from tests.support.commands import run_cli
from tests.support.tokens import SECRET, claims, sign

# One dollar per token, so that costs are token counts.
DOLLAR_A_TOKEN = {"input_per_million": 1_000_000.0, "output_per_million": 1_000_000.0}


def _estimate(prompt: str, output: int) -> int:
    return math.ceil(len(prompt) / 4) + output


async def _execute(proxy: Proxy, prompt: str, model: str) -> pb.ExecuteResponse | str:
    try:
        return await proxy.stub.Execute(request(prompt, model=model))
    except grpc.aio.AioRpcError as error:
        return f"{error.code().name}: {error.details()}"


async def test_budget_under_50_concurrent_requests_overshoots_by_at_most_those_in_flight(
    start_proxy: ProxyFactory,
) -> None:
    budget = 500.0
    proxy = await start_proxy(
        {
            "models": {"prices": {"scripted-async": DOLLAR_A_TOKEN}},
            "quotas": {"estimate_output_tokens": 4, "default": {"usd_per_day": budget}},
            "ledger": {"backend": "none"},
        }
    )
    # Each request is estimated at a few dollars but really costs $110, and all 50 are in
    # flight together (a second each), so no settlement can hold later admissions back.
    prompt = script(chunks=["x"], delay=1.0, usage={"input": 10, "output": 100})
    estimate = _estimate(prompt, 4)
    results = await asyncio.gather(*(_execute(proxy, prompt, "scripted-async") for _ in range(50)))
    answers = [r for r in results if not isinstance(r, str)]
    refused = [r for r in results if isinstance(r, str)]
    assert all(a.WhichOneof("result") == "success" for a in answers)
    assert 1 <= len(answers) <= budget // estimate
    assert all(r.startswith("RESOURCE_EXHAUSTED") and "budget" in r for r in refused)
    spent = sum(a.success.metrics.cost_usd for a in answers)
    assert spent == 110 * len(answers)
    # Reservations never exceeded the budget; only what the admitted requests used beyond
    # their estimates can take spending past it.
    assert spent - budget <= len(answers) * (110 - estimate)
    after = await _execute(proxy, "hello", "scripted-async")
    assert isinstance(after, str)
    assert after.startswith("RESOURCE_EXHAUSTED")
    assert "spend budget of $500.00 per day" in after
    assert proxy.container.admission().in_flight == 0


async def _used(proxy: Proxy, model: str) -> float:
    policy = proxy.container.policy().current().quotas
    limits = applicable_limits(policy, "anonymous", None, model)
    now = proxy.container.clock().now()
    charges = charges_for(limits, 0, 0.0, now)
    (used,) = await proxy.container.quota_store().usage(charges, now)
    return used


async def _tokens_per_minute(start_proxy: ProxyFactory, limit: int, estimate_output: int) -> Proxy:
    """A proxy allowing everyone `limit` tokens a minute, reserving `estimate_output` output
    tokens for a request until it reports what it used."""
    return await start_proxy(
        {
            "quotas": {
                "estimate_output_tokens": estimate_output,
                "default": {"tokens_per_minute": limit},
            },
            "ledger": {"backend": "none"},
        }
    )


async def test_a_streamed_answer_is_charged_to_tokens_per_minute(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await _tokens_per_minute(start_proxy, 200, estimate_output=10)
    prompt = script(chunks=["a", "b"], usage={"input": 5, "output": 185})
    chunks = [chunk async for chunk in proxy.stub.StreamExecute(request(prompt, model="scripted"))]
    assert chunks[-1].WhichOneof("chunk_type") == "complete"
    await proxy.container.admission().close()
    assert await _used(proxy, "scripted") == 190
    # The next request (2 + 10 tokens estimated) would fit had the stream been charged its
    # estimate (12) rather than what it used.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await proxy.stub.Execute(request("one more", model="echo"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "200 tokens per minute" in (caught.value.details() or "")
    assert "190 used this minute" in (caught.value.details() or "")


async def test_a_cancelled_stream_is_charged_for_what_it_streamed(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await _tokens_per_minute(start_proxy, 5000, estimate_output=1000)
    chunk = "y" * 40  # 10 tokens at 4 characters a token
    prompt = script(chunks=[chunk] * 20, delay=0.05)
    call = proxy.stub.StreamExecute(request(prompt, model="scripted"))
    for _ in range(3):
        assert await read_chunk(call) is not None
    assert await _used(proxy, "scripted") == _estimate(prompt, 1000)
    call.cancel()
    admission = proxy.container.admission()
    for _ in range(200):
        if admission.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    await admission.close()
    used = await _used(proxy, "scripted")
    input_tokens = math.ceil(len(prompt) / 4)
    # At least the 3 chunks read, at most all 20; far below the 1,000 reserved for output.
    assert input_tokens + 30 <= used <= input_tokens + 200


async def test_a_spent_team_budget_stays_spent_after_a_restart(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    config: dict[str, Any] = {
        "auth": {"enabled": True, "secret": SECRET},
        "models": {"prices": {"scripted": DOLLAR_A_TOKEN}},
        "quotas": {"estimate_output_tokens": 1, "teams": {"r*": {"usd_per_month": 100}}},
        "ledger": {"path": str(tmp_path / "usage.sqlite3")},
    }
    token = sign(claims("alice", team="red"))
    bearer = (("authorization", f"Bearer {token}"),)
    prompt = script(chunks=["x"], usage={"input": 1, "output": 99})
    first = await start_proxy(config)
    reply = await first.stub.Execute(request(prompt, model="scripted"), metadata=bearer)
    assert reply.success.metrics.cost_usd == 100
    await first.running.stop(1)

    second = await start_proxy(config)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await second.stub.Execute(request(prompt, model="scripted"), metadata=bearer)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details() or ""
    assert "team 'red' has used its spend budget of $100.00 per month" in details
    assert "quotas.teams rule 'r*'" in details
    # Another team's member is not held to red's budget.
    other = sign(claims("bob", team="blue"))
    reply = await second.stub.Execute(
        request(prompt, model="scripted"), metadata=(("authorization", f"Bearer {other}"),)
    )
    assert reply.WhichOneof("result") == "success"


async def test_server_info_tells_the_caller_its_own_limits_and_what_is_left(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy(
        {
            "auth": {"enabled": True, "secret": SECRET},
            "models": {"prices": {"scripted": DOLLAR_A_TOKEN}},
            "limits": {"max_requests_per_minute": 30},
            "quotas": {
                "estimate_output_tokens": 1,
                "subjects": {
                    "alice": {"tokens_per_minute": 1000, "models": {"scr*": {"usd_per_day": 50}}}
                },
                "teams": {"red": {"usd_per_month": 100}},
            },
            "ledger": {"backend": "none"},
        }
    )
    bearer = (("authorization", f"Bearer {sign(claims('alice', team='red'))}"),)
    prompt = script(chunks=["x"], usage={"input": 1, "output": 9})
    reply = await proxy.stub.Execute(request(prompt, model="scripted"), metadata=bearer)
    assert reply.success.metrics.cost_usd == 10
    await proxy.container.admission().close()

    info = await proxy.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer)
    assert info.caller_usage_known
    rows = {(limit.scope, limit.kind, limit.models): limit for limit in info.caller_limits}
    assert set(rows) == {
        ("subject", "requests_per_minute", ""),
        ("subject", "tokens_per_minute", ""),
        ("subject", "usd_per_day", "scr*"),
        ("team", "usd_per_month", ""),
    }
    rpm = rows[("subject", "requests_per_minute", "")]
    assert (rpm.limit, rpm.used, rpm.remaining, rpm.resets_at, rpm.budget) == (30, 1, 29, 0, False)
    assert rows[("subject", "tokens_per_minute", "")].used == 10
    month = rows[("team", "usd_per_month", "")]
    assert (month.team, month.used, month.remaining, month.budget) == ("red", 10, 90, True)
    assert month.resets_at > reply.success.metrics.timestamp
    assert rows[("subject", "usd_per_day", "scr*")].remaining == 40

    # Another caller sees its own limits, not alice's.
    other = (("authorization", f"Bearer {sign(claims('bob'))}"),)
    theirs = await proxy.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=other)
    assert [(limit.kind, limit.used) for limit in theirs.caller_limits] == [
        ("requests_per_minute", 0)
    ]


async def test_limits_show_prints_effective_limits_and_consumption(
    start_proxy: ProxyFactory, redis_url: str, tmp_path: Path
) -> None:
    config: dict[str, Any] = {
        "models": {"prices": {"scripted": DOLLAR_A_TOKEN}},
        "limits": {"max_requests_per_minute": 30},
        "quotas": {
            "store": "redis",
            "redis_url": redis_url,
            "estimate_output_tokens": 1,
            "default": {"usd_per_day": 50},
        },
        "ledger": {"backend": "none"},
    }
    proxy = await start_proxy(config)
    prompt = script(chunks=["x"], usage={"input": 1, "output": 9})
    await proxy.stub.Execute(request(prompt, model="scripted"))
    await proxy.container.admission().close()
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli("limits", "show", "anonymous", "--json", "--config", str(path))
    assert done.returncode == 0, done.stderr
    shown = {row["kind"]: row for row in json.loads(done.stdout)["limits"]}
    assert (shown["requests_per_minute"]["used"], shown["requests_per_minute"]["limit"]) == (1, 30)
    assert (shown["usd_per_day"]["used"], shown["usd_per_day"]["remaining"]) == (10, 40)
    assert shown["usd_per_day"]["resets_at"].endswith("00:00 UTC")
