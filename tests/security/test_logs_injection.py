"""Issue 10 item 4 (the log side): whatever a client puts in a value that reaches a text log
line (request id, token subject, key id, model name), each log record stays exactly one line
and no terminal escape reaches the log."""

from __future__ import annotations

import re
from pathlib import Path

import grpc

from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.helpers import request
from tests.security.served import serve
from tests.support.tokens import SECRET, bearer, claims, raw_token, sign

FORGED = "2031-01-01 00:00:00,000 WARNING llm_proxy.server: FORGED"
# Newline, carriage return, ESC (a colour and a cursor move), DEL, a C1 control, the Unicode
# line separator and a right-to-left override.
PAYLOAD = f"x\n{FORGED}\r{FORGED}\x1b[31m\x1b[2K\x7f\x85\u2028{FORGED}\u202e"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")

CONFIG = f"server:\n  port: 0\nauth:\n  secret: {SECRET}\nlogging:\n  format: text\n"


def _assert_clean(log: str) -> None:
    assert UNSAFE.search(log) is None, [line for line in log.splitlines() if UNSAFE.search(line)]
    for line in log.splitlines():
        assert not line.startswith(FORGED), line
        # A record starts with its timestamp; only a traceback's lines may follow it, indented.
        assert RECORD_START.match(line) or line[:1].isspace() or line.startswith("Traceback"), line


async def _call(
    address: str, token: str, *, model: str | None = None, request_id: str = ""
) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        message = request("hi", model=model, request_id=request_id)
        try:
            await stub.Execute(message, metadata=bearer(token), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


async def test_a_subject_cannot_forge_lines_in_the_request_log(tmp_path: Path) -> None:
    with serve(CONFIG, tmp_path) as server:
        token = sign(claims(subject="mallory" + PAYLOAD))
        assert await _call(server.address, token, model="echo") == grpc.StatusCode.OK
        log = server.wait_for(lambda log: "subject=mallory" in log)

    _assert_clean(log)
    line = next(line for line in log.splitlines() if "subject=mallory" in line)
    # Escaped, not dropped: the operator still sees what the client sent.
    assert "subject=mallory" + "x\\n" + FORGED + "\\r" in line
    assert "\\x1b[31m" in line
    assert "\\u2028" in line
    assert "outcome=ok" in line


async def test_a_request_id_cannot_forge_lines(tmp_path: Path) -> None:
    with serve(CONFIG, tmp_path) as server:
        token = sign(claims(subject="alice"))
        status = await _call(server.address, token, model="echo", request_id="r1" + PAYLOAD)
        # Either refused outright or logged escaped; never a forged line.
        assert status in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
        await _call(server.address, token, model="echo", request_id="after")
        log = server.wait_for(lambda log: "request_id=after" in log)

    _assert_clean(log)


async def test_a_key_id_or_model_name_cannot_forge_lines(tmp_path: Path) -> None:
    with serve(CONFIG, tmp_path) as server:
        crafted = raw_token({"alg": "HS256", "kid": "k" + PAYLOAD}, claims(), SECRET.encode())
        assert await _call(server.address, crafted) == grpc.StatusCode.UNAUTHENTICATED
        token = sign(claims(subject="alice"))
        await _call(server.address, token, model="echo" + PAYLOAD)
        await _call(server.address, token, model="echo", request_id="after")
        log = server.wait_for(lambda log: "request_id=after" in log)

    _assert_clean(log)
    assert "refused a call (unauthenticated)" in log
