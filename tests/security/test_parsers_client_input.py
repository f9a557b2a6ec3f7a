"""Issue 10 item 6: client input that used to raise inside a parser (RecursionError,
ValueError, OverflowError) gets the normal client error against the real server, with no
ERROR line and no traceback in its log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import grpc
import pytest

from adapters.grpc.decode import MAX_JSON_CHARS
from domain.json_text import MAX_JSON_DEPTH
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.integration.helpers import collect, request
from tests.security.served import Served, serve
from tests.support.tokens import SECRET, bearer, claims, sign

CONFIG = (
    f"server:\n  port: 0\nauth:\n  secret: {SECRET}\ntracing:\n  enabled: true\n  exporter: none\n"
)
GOOD = sign(claims(subject="alice"))

HOSTILE_SCHEMAS = {
    "nested-1000": '{"type": "object", "x": ' + "[" * 1000 + "]" * 1000 + "}",
    "nested-past-the-bound": '{"x": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}",
    "integer-5000-digits": '{"type": "object", "maxLength": ' + "9" * 5000 + "}",
    "float-overflow": '{"type": "object", "maximum": 1e999}',
    "nan": '{"type": "object", "maximum": NaN}',
    "oversized": '{"type": "object", "description": "' + "a" * MAX_JSON_CHARS + '"}',
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(payload: str) -> str:
    """A correctly signed token whose payload is written by hand (PyJWT cannot write 1e400)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(payload.encode())
    mac = hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + _b64(mac)


HOSTILE_TOKENS = {
    "exp-10**400": _signed('{"sub": "a", "exp": 1' + "0" * 400 + "}"),
    "exp-1e400": _signed('{"sub": "a", "exp": 1e400}'),
    "exp-far-as-string": _signed('{"sub": "a", "exp": "99999999999999999999"}'),
    "nbf-1e400": _signed('{"sub": "a", "exp": 99999999999, "nbf": 1e400}'),
    "iat-1e400": _signed('{"sub": "a", "exp": 99999999999, "iat": 1e400}'),
    "payload-nested-1400": _signed(
        '{"sub": "a", "exp": 99999999999, "x": ' + "[" * 1400 + "]" * 1400 + "}"
    ),
    "header-nested": _b64(b'{"alg": "HS256", "x": ' + b"[" * 1500 + b"]" * 1500 + b"}")
    + ".e30.e30",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(CONFIG, tmp_path_factory.mktemp("parsers")) as server:
        yield server


def _assert_quiet(served: Served) -> None:
    log = served.log
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]


@pytest.mark.parametrize("name", HOSTILE_SCHEMAS)
async def test_a_hostile_schema_is_an_in_band_invalid_schema(served: Served, name: str) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        message = request("hi", model="echo", schema=HOSTILE_SCHEMAS[name], request_id=name)
        reply = await stub.Execute(message, metadata=bearer(GOOD), timeout=30)
        chunks = await collect(stub.StreamExecute(message, metadata=bearer(GOOD), timeout=30))

    assert reply.WhichOneof("result") == "error", reply
    assert reply.error.error_code == "INVALID_SCHEMA"
    assert "response_model_schema" in reply.error.error_message
    assert len(reply.error.error_message) < 300
    assert [chunk.error.error_code for chunk in chunks] == ["INVALID_SCHEMA"]
    served.wait_for(lambda log: log.count(f"request_id={name} ") == 2)
    _assert_quiet(served)


@pytest.mark.parametrize("name", HOSTILE_TOKENS)
async def test_a_token_with_absurd_claims_is_unauthenticated(served: Served, name: str) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(
                request("hi", model="echo"), metadata=bearer(HOSTILE_TOKENS[name]), timeout=30
            )

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    _assert_quiet(served)


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-" + "f" * 3000 + "-" + "1" * 16 + "-01",
        "ff-00000000000000000000000000000000-0000000000000000-zz",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra,,,=",
    ],
)
async def test_a_malformed_traceparent_is_ignored(served: Served, traceparent: str) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        metadata = (*bearer(GOOD), ("traceparent", traceparent), ("tracestate", traceparent))
        reply: pb.ExecuteResponse = await stub.Execute(
            request("hi", model="echo"), metadata=metadata, timeout=30
        )

    assert reply.success.response_text
    _assert_quiet(served)
