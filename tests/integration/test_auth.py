"""Authentication and authorization against the real server on loopback, over real gRPC."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infrastructure.config.loader import deep_merge, validate
from infrastructure.security import AuthReload
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import BASE_CONFIG, Proxy, ProxyFactory
from tests.integration.helpers import collect, request
from tests.support.tokens import (
    OTHER_SECRET,
    SECRET,
    bearer,
    claims,
    key_pair,
    raw_token,
    sign,
    tampered,
)

ISSUER = "https://auth.test"
AUDIENCE = "llm-proxy"
RSA = key_pair("RS256")
ES = key_pair("ES256")
ED = key_pair("EdDSA")
PS = key_pair("PS256")

AUTH: dict[str, Any] = {
    "enabled": True,
    "issuer": ISSUER,
    "audience": [AUDIENCE],
    "leeway_seconds": 5,
    "max_token_bytes": 2048,
    "keys": [
        {"id": "hs-2025", "algorithm": "HS256", "secret": SECRET},
        {"id": "hs512", "algorithm": "HS512", "secret": SECRET},
        {"id": "rsa", "algorithm": "RS256", "public_key": RSA.public_pem},
        {"id": "ps", "algorithm": "PS256", "public_key": PS.public_pem},
        {"id": "ec", "algorithm": "ES256", "public_key": ES.public_pem},
        {"id": "ed", "algorithm": "EdDSA", "public_key": ED.public_pem},
    ],
}


def good(subject: str = "alice", **extra: Any) -> dict[str, Any]:
    return claims(subject, **{"iss": ISSUER, "aud": AUDIENCE, **extra})


def valid_token(**extra: Any) -> str:
    return sign(good(**extra), SECRET, kid="hs-2025")


@pytest.fixture
async def secured(start_proxy: ProxyFactory) -> Proxy:
    return await start_proxy({"auth": AUTH})


def _without(payload: dict[str, Any], claim: str) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != claim}


def _bad_tokens() -> list[tuple[str, str, str]]:
    """(case, token, what the refusal must say)."""
    now = int(time.time())
    rsa_pem = RSA.public_pem.encode()
    return [
        ("garbage", "not-a-jwt", "malformed token"),
        ("bad base64", "###.###.###", "malformed token"),
        ("alg none", raw_token({"alg": "none"}, good(), None), "'none' is not accepted"),
        (
            "alg none with kid",
            raw_token({"alg": "none", "kid": "hs-2025"}, good(), None),
            "'none' is not accepted",
        ),
        (
            "HS256 signed with the RSA public key",
            raw_token({"alg": "HS256", "kid": "rsa"}, good(), rsa_pem),
            "key 'rsa' is for RS256",
        ),
        (
            "HS256 with the RSA public key, no kid",
            raw_token({"alg": "HS256"}, good(), rsa_pem),
            "bad signature",
        ),
        ("tampered payload", tampered(valid_token(), sub="root"), "bad signature"),
        ("tampered models", tampered(valid_token(models=["echo"]), models=["*"]), "bad signature"),
        ("unknown secret", sign(good(), OTHER_SECRET, kid="hs-2025"), "bad signature"),
        ("expired", sign(good(exp=now - 60), SECRET, kid="hs-2025"), "expired"),
        ("no exp", sign(_without(good(), "exp"), SECRET, kid="hs-2025"), "no 'exp'"),
        ("not yet valid", sign(good(nbf=now + 600), SECRET, kid="hs-2025"), "(nbf)"),
        ("future iat", sign(good(iat=now + 600), SECRET, kid="hs-2025"), "(iat)"),
        ("wrong audience", sign(good(aud="billing"), SECRET, kid="hs-2025"), "wrong audience"),
        ("no audience", sign(claims(iss=ISSUER), SECRET, kid="hs-2025"), "no 'aud'"),
        ("wrong issuer", sign(good(iss="https://evil.test"), SECRET, kid="hs-2025"), "issuer"),
        ("unknown kid", sign(good(), SECRET, kid="hs-1999"), "unknown key id"),
        (
            "rotated-out key",
            sign(good(), OTHER_SECRET, kid="hs-2024"),
            "rotated out",
        ),
        (
            "RS256 signed by a stranger",
            sign(good(), key_pair("RS256").private, "RS256", "rsa"),
            "bad signature",
        ),
        ("over-long", valid_token(padding="x" * 3000), "at most 2048"),
        ("models not a list", valid_token(models="echo"), "models claim"),
        ("no subject", sign(_without(good(), "sub"), SECRET, kid="hs-2025"), "no 'sub'"),
    ]


BAD_TOKENS = _bad_tokens()


async def _refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_crafted_bad_tokens_are_refused_on_every_method(
    secured: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(BAD_TOKENS) >= 15
    caplog.set_level(logging.DEBUG)
    for case, token, expected in BAD_TOKENS:
        md = bearer(token)
        unary = await _refusal(secured.stub.Execute(request("hi", model="echo"), metadata=md))
        streamed = await _refusal(
            collect(secured.stub.StreamExecute(request("hi", model="echo"), metadata=md))
        )
        info = await _refusal(secured.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=md))
        for error in (unary, streamed, info):
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, case
            details = error.details() or ""
            assert expected in details, (case, details)
            assert token not in details, case
    # Still healthy: the health service (which needs no token) says so, and a good token works
    # on both methods.
    health = health_pb2_grpc.HealthStub(secured.channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    md = bearer(valid_token())
    answer = await secured.stub.Execute(request("still there?", model="echo"), metadata=md)
    assert answer.WhichOneof("result") == "success"
    chunks = await collect(secured.stub.StreamExecute(request("yes", model="echo"), metadata=md))
    assert chunks[-1].WhichOneof("chunk_type") == "complete"
    # Neither the tokens nor the secret ever reach the log.
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "refused a call (unauthenticated)" in logged
    for _, token, _ in BAD_TOKENS:
        assert token not in logged
    assert valid_token().split(".")[2] not in logged
    assert SECRET not in logged


async def test_calls_without_metadata_are_refused(secured: Proxy) -> None:
    error = await _refusal(secured.stub.Execute(request("hi", model="echo")))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing credentials" in (error.details() or "")
    error = await _refusal(
        secured.stub.Execute(request("hi"), metadata=(("authorization", "Token abc"),))
    )
    assert "expected 'Bearer <token>'" in (error.details() or "")


@pytest.mark.parametrize(
    ("kid", "algorithm", "key"),
    [
        ("hs-2025", "HS256", SECRET),
        ("hs512", "HS512", SECRET),
        ("rsa", "RS256", RSA.private),
        ("ps", "PS256", PS.private),
        ("ec", "ES256", ES.private),
        ("ed", "EdDSA", ED.private),
    ],
)
async def test_each_supported_algorithm_is_accepted(
    secured: Proxy, kid: str, algorithm: str, key: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_proxy.requests")
    token = sign(good(f"user-{kid}"), key, algorithm, kid=kid)

    answer = await secured.stub.Execute(
        request("hi", model="echo", request_id=f"alg-{kid}"), metadata=bearer(token)
    )

    assert answer.WhichOneof("result") == "success"
    # The principal reached the use case: the request log names the token's subject.
    lines = [r.getMessage() for r in caplog.records if f"request_id=alg-{kid}" in r.getMessage()]
    assert len(lines) == 1
    assert f"subject=user-{kid}" in lines[0]


async def test_key_rotation_overlap_then_removal(start_proxy: ProxyFactory) -> None:
    old = {"id": "k-old", "algorithm": "HS256", "secret": OTHER_SECRET}
    new = {"id": "k-new", "algorithm": "HS256", "secret": SECRET}
    overlap = {"auth": {"enabled": True, "keys": [old, new]}}
    proxy = await start_proxy(overlap)
    old_token = sign(claims(), OTHER_SECRET, kid="k-old")
    new_token = sign(claims(), SECRET, kid="k-new")
    old_no_kid = sign(claims("no-kid"), OTHER_SECRET)

    for token in (old_token, new_token, old_no_kid):
        answer = await proxy.stub.Execute(request("hi", model="echo"), metadata=bearer(token))
        assert answer.WhichOneof("result") == "success"

    # Reload with the old key gone (what SIGHUP does): cached acceptances must not survive.
    after = validate(deep_merge(BASE_CONFIG, {"auth": {"enabled": True, "keys": [new]}}))
    AuthReload(proxy.container.token_verifier()).prepare(after)()

    for token, reason in ((old_token, "rotated out"), (old_no_kid, "bad signature")):
        error = await _refusal(proxy.stub.Execute(request("hi"), metadata=bearer(token)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason in (error.details() or "")
    answer = await proxy.stub.Execute(request("hi", model="echo"), metadata=bearer(new_token))
    assert answer.WhichOneof("result") == "success"


async def test_a_server_started_without_the_old_key_refuses_its_tokens(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy(
        {"auth": {"enabled": True, "keys": [{"id": "k-new", "secret": SECRET}]}}
    )
    error = await _refusal(
        proxy.stub.Execute(
            request("hi"), metadata=bearer(sign(claims(), OTHER_SECRET, kid="k-old"))
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------- authorization


async def test_model_allow_list_is_enforced(secured: Proxy) -> None:
    md = bearer(valid_token(models=["echo", "scripted-*"]))

    allowed = await secured.stub.Execute(request("hi", model="echo"), metadata=md)
    assert allowed.WhichOneof("result") == "success"
    unknown = await secured.stub.Execute(request("hi", model="no-such-model"), metadata=md)
    for name in ("markov", "scripted"):
        # Outside the claim reads exactly like a model that does not exist.
        reply = await secured.stub.Execute(request("hi", model=name), metadata=md)
        assert reply.error.error_code == "MODEL_NOT_FOUND"
        assert reply.error.error_details == unknown.error.error_details
        assert reply.error.error_message == unknown.error.error_message.replace(
            "'no-such-model'", repr(name)
        )
        chunks = await collect(secured.stub.StreamExecute(request("hi", model=name), metadata=md))
        assert chunks[-1].error.error_message == reply.error.error_message
    listed = set(unknown.error.error_details.split(", "))
    assert "echo" in listed
    assert "markov" not in listed


async def test_default_model_counts_too(secured: Proxy) -> None:
    # echo is the default; a token for markov only may not fall back to it, nor learn its name.
    md = bearer(valid_token(models=["markov"]))
    reply = await secured.stub.Execute(request("hi"), metadata=md)
    assert reply.error.error_code == "MODEL_NOT_FOUND"
    assert "echo" not in reply.error.error_message
    assert reply.error.error_details == "markov"


async def test_server_info_lists_only_the_models_a_caller_may_use(secured: Proxy) -> None:
    everything = await secured.stub.GetServerInfo(
        pb.GetServerInfoRequest(), metadata=bearer(valid_token())
    )
    limited = await secured.stub.GetServerInfo(
        pb.GetServerInfoRequest(), metadata=bearer(valid_token(models=["scripted*"]))
    )
    nothing = await secured.stub.GetServerInfo(
        pb.GetServerInfoRequest(), metadata=bearer(valid_token(models=[]))
    )

    all_ids = {model.model_id for model in everything.available_models}
    limited_ids = {model.model_id for model in limited.available_models}
    assert {"echo", "scripted"} <= all_ids
    assert limited_ids == {model for model in all_ids if model.startswith("scripted")}
    assert limited_ids
    assert list(nothing.available_models) == []


# --------------------------------------------------------------------------- defaults


async def test_the_default_configuration_requires_a_token(
    start_proxy: ProxyFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    defaults = validate({})
    assert defaults.auth == validate({"auth": {"enabled": True}}).auth
    assert defaults.auth.enabled
    # BASE_CONFIG switches auth off for the other tests; this puts the default back.
    proxy = await start_proxy({"auth": {"enabled": True}})

    error = await _refusal(proxy.stub.Execute(request("hi", model="echo")))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    secret_file = tmp_path / "llm-proxy" / "jwt-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "llm-proxy").stat().st_mode & 0o777 == 0o700
    secret = secret_file.read_text().strip()
    token = sign(claims("newcomer"), secret)
    answer = await proxy.stub.Execute(request("hi", model="echo"), metadata=bearer(token))
    assert answer.WhichOneof("result") == "success"
