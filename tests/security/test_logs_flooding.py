"""Issue 10 item 5: calls refused before authentication or decoding cost one short log line
per kind and interval, never a traceback, and are counted in a metric."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import grpc

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.security.served import serve
from tests.support.tokens import SECRET, bearer, claims, sign

EXECUTE = "/vibectl.llm_proxy.VibectlLLMProxy/Execute"
STREAM = "/vibectl.llm_proxy.VibectlLLMProxy/StreamExecute"
HEALTH = "/grpc.health.v1.Health/Check"
# Not a protobuf message: a field tag followed by a length far past the end.
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"
# A well-formed message whose string field holds invalid UTF-8.
BAD_UTF8 = b"\x0a\x03\xff\xfe\xfd"
CONFIG = f"server:\n  port: 0\nauth:\n  secret: {SECRET}\nmetrics:\n  enabled: true\n  port: 0\n"


async def _send(
    address: str, body: bytes, *, token: str | None = None, method: str = EXECUTE
) -> grpc.aio.AioRpcError:
    metadata = bearer(token) if token is not None else None
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            if method == STREAM:
                call = channel.unary_stream(method, None, None)(body, metadata=metadata, timeout=10)
                async for _ in call:
                    pass
            else:
                await channel.unary_unary(method, None, None)(body, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error
    raise AssertionError("the call was not refused")


def _scrape(port: int | None) -> str:
    assert port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def _counted(metrics: str, reason: str) -> float:
    match = re.search(
        rf'^llm_proxy_refused_calls_total\{{reason="{reason}"\}} (\S+)$', metrics, re.M
    )
    return float(match.group(1)) if match else 0.0


async def test_a_flood_of_refusals_is_summarised_not_logged_call_by_call(tmp_path: Path) -> None:
    good = sign(claims(subject="alice"))
    with serve(CONFIG, tmp_path) as served:
        address = served.address
        no_token = [_send(address, GARBAGE) for _ in range(100)]
        body = pb.ExecuteRequest(user_fragments=["hi"]).SerializeToString()
        bad_token = [_send(address, body, token="not-a-jwt") for _ in range(100)]
        malformed = [_send(address, GARBAGE, token=good) for _ in range(50)]
        malformed += [_send(address, BAD_UTF8, token=good, method=STREAM) for _ in range(50)]
        refused = await asyncio.gather(*no_token, *bad_token, *malformed)
        metrics = _scrape(served.metrics_port)
        assert served.stop() == 0
    log = served.log

    codes = [error.code() for error in refused]
    assert (
        codes == [grpc.StatusCode.UNAUTHENTICATED] * 200 + [grpc.StatusCode.INVALID_ARGUMENT] * 100
    )
    assert "the request body does not decode" in str(refused[-1].details())
    assert "Traceback" not in log
    assert " ERROR " not in log
    refusal_lines = [line for line in log.splitlines() if "llm_proxy.refusals" in line]
    # 300 refusals: one line for the first of each kind, then one summary.
    assert len(refusal_lines) <= 4, refusal_lines
    summary = refusal_lines[-1]
    assert "more refused calls" in summary
    assert "unauthenticated from ipv4:127.0.0.1: 199" in summary
    assert "malformed_request from ipv4:127.0.0.1: 99" in summary
    assert _counted(metrics, "unauthenticated") == 200
    assert _counted(metrics, "malformed_request") == 100


async def test_a_malformed_body_without_authentication_is_one_short_line(tmp_path: Path) -> None:
    config = "server:\n  port: 0\nauth:\n  enabled: false\n"
    with serve(config, tmp_path) as served:
        error = await _send(served.address, GARBAGE)
        stream_error = await _send(served.address, BAD_UTF8, method=STREAM)
        health_error = await _send(served.address, GARBAGE, method=HEALTH)
        line = served.wait_for(lambda log: "refused a call (malformed_request)" in log)
        assert served.stop() == 0

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stream_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert health_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExecuteRequest" in str(error.details())
    assert "Traceback" not in served.log
    assert " ERROR " not in served.log
    refusal = next(text for text in line.splitlines() if "malformed_request" in text)
    assert len(refusal) < 250
