"""Server URLs, token sources, retry arithmetic and error mapping: no network involved."""

from __future__ import annotations

import random
from pathlib import Path

import grpc
import pytest

from llm_proxy_client import (
    AuthenticationError,
    ConfigurationError,
    ConnectionSettings,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    ProxyClientError,
    ProxyTimeoutError,
    RateLimitedError,
    RequestCancelledError,
    RetryPolicy,
    ServerError,
    UnavailableError,
    UpstreamError,
    parse_server_url,
)
from llm_proxy_client import _protocol as proto
from llm_proxy_client.connection import Attempts
from llm_proxy_client.generated import llm_proxy_pb2 as pb

ADDRESS = parse_server_url("llm-proxy+insecure://a:1")


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "token"),
    [
        ("llm-proxy://proxy.example:443", "proxy.example", 443, True, None),
        ("llm-proxy://tok.en-1@proxy.example:9000", "proxy.example", 9000, True, "tok.en-1"),
        ("llm-proxy+insecure://127.0.0.1:50051", "127.0.0.1", 50051, False, None),
        ("vibectl-server://abc@host:1234", "host", 1234, True, "abc"),
        ("vibectl-server-insecure://localhost:7", "localhost", 7, False, None),
        ("llm-proxy://host", "host", 50051, True, None),
        ("LLM-PROXY+INSECURE://[::1]:5/", "::1", 5, False, None),
        ("llm-proxy://a%2Fb@host:1", "host", 1, True, "a/b"),
    ],
)
def test_server_urls_parse(url: str, host: str, port: int, tls: bool, token: str | None) -> None:
    address = parse_server_url(url)
    assert (address.host, address.port, address.tls, address.token) == (host, port, tls, token)


def test_ipv6_target_is_bracketed_and_token_never_rendered() -> None:
    address = parse_server_url("llm-proxy://secret@[::1]:9")
    assert address.target == "[::1]:9"
    assert "secret" not in str(address)
    assert address.is_loopback


@pytest.mark.parametrize(
    "url",
    [
        "http://host:1",
        "host:1",
        "llm-proxy://:1",
        "llm-proxy://host:notaport",
        "llm-proxy://host:1/path",
        "llm-proxy://host:1?x=1",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_server_url(url)
    assert "llm-proxy" in str(caught.value)


def test_token_precedence(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    env_file = tmp_path / "env-token"
    env_file.write_text("from-env-file")
    env = {"LLM_PROXY_TOKEN": "from-env", "LLM_PROXY_TOKEN_FILE": str(env_file)}
    url = "llm-proxy+insecure://from-url@127.0.0.1:1"

    def token(**kwargs: object) -> str | None:
        return ConnectionSettings.create(kwargs.pop("url", url), env=env, **kwargs).token  # type: ignore[arg-type]

    assert token(token="explicit", token_file=token_file) == "explicit"
    assert token(token_file=token_file) == "from-file"
    assert token() == "from-url"
    assert token(url="llm-proxy+insecure://127.0.0.1:1") == "from-env"
    env.pop("LLM_PROXY_TOKEN")
    assert token(url="llm-proxy+insecure://127.0.0.1:1") == "from-env-file"
    env.pop("LLM_PROXY_TOKEN_FILE")
    assert token(url="llm-proxy+insecure://127.0.0.1:1") is None


def test_token_goes_into_authorization_metadata() -> None:
    settings = ConnectionSettings.create("llm-proxy+insecure://t0k@127.0.0.1:1", env={})
    assert settings.metadata() == (("authorization", "Bearer t0k"),)
    assert ConnectionSettings.create("llm-proxy+insecure://127.0.0.1:1", env={}).metadata() == ()


def test_url_comes_from_environment_then_default() -> None:
    env = {"LLM_PROXY_URL": "llm-proxy://h:2"}
    assert ConnectionSettings.create(env=env).address.target == "h:2"
    assert str(ConnectionSettings.create(env={}).address) == "llm-proxy+insecure://127.0.0.1:50051"


def test_unreadable_token_and_ca_files_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="token file"):
        ConnectionSettings.create("llm-proxy://h:1", token_file=tmp_path / "missing", env={})
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigurationError, match="empty"):
        ConnectionSettings.create("llm-proxy://h:1", token_file=tmp_path / "empty", env={})
    (tmp_path / "not-pem").write_text("hello")
    with pytest.raises(ConfigurationError, match="PEM"):
        ConnectionSettings.create("llm-proxy://h:1", ca_bundle=tmp_path / "not-pem", env={})


CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n"


def _identity_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "client.pem", tmp_path / "client-key.pem"
    cert.write_bytes(CERT_PEM)
    key.write_bytes(KEY_PEM)
    return cert, key


def test_client_identity_from_arguments_or_environment(tmp_path: Path) -> None:
    cert, key = _identity_files(tmp_path)
    by_argument = ConnectionSettings.create(
        "llm-proxy://h:1", client_cert=cert, client_key=key, env={}
    )
    env = {"LLM_PROXY_CLIENT_CERT": str(cert), "LLM_PROXY_CLIENT_KEY": str(key)}
    by_environment = ConnectionSettings.create("llm-proxy://h:1", env=env)
    assert by_argument.client_identity == by_environment.client_identity == (CERT_PEM, KEY_PEM)
    # The private key and the token never show up in a repr that might reach a log.
    with_token = ConnectionSettings.create("llm-proxy://t0ken@h:1", env=env)
    assert "secret-key-bytes" not in repr(with_token)
    assert "t0ken" not in repr(with_token)
    # A plaintext connection has no use for it, so an exported identity is left alone.
    assert ConnectionSettings.create("llm-proxy+insecure://h:1", env=env).client_identity is None


@pytest.mark.parametrize("given", ["client_cert", "client_key"])
def test_half_a_client_identity_is_a_configuration_error(tmp_path: Path, given: str) -> None:
    cert, key = _identity_files(tmp_path)
    only_cert, only_key = (cert, None) if given == "client_cert" else (None, key)
    with pytest.raises(ConfigurationError, match="mutual TLS needs both"):
        ConnectionSettings.create(
            "llm-proxy://h:1", client_cert=only_cert, client_key=only_key, env={}
        )


def test_unreadable_or_swapped_client_identity_files_are_configuration_errors(
    tmp_path: Path,
) -> None:
    cert, key = _identity_files(tmp_path)
    with pytest.raises(ConfigurationError, match="cannot read client certificate"):
        ConnectionSettings.create(
            "llm-proxy://h:1", client_cert=tmp_path / "missing", client_key=key, env={}
        )
    with pytest.raises(ConfigurationError, match=r"client key .* holds no PEM private key"):
        ConnectionSettings.create("llm-proxy://h:1", client_cert=cert, client_key=cert, env={})


def test_keepalive_pings_every_30_seconds() -> None:
    options = dict(ConnectionSettings.create("llm-proxy://h:1", env={}).channel_options())
    assert options["grpc.keepalive_time_ms"] == 30_000


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(1)
    for retry, base in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        delays = {policy.delay(retry, rng) for _ in range(50)}
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(delays) > 1  # jittered, not constant


def test_attempts_stop_at_max_and_within_deadline() -> None:
    attempts = Attempts(RetryPolicy(max_attempts=3, initial_backoff=0.01), timeout=None)
    assert attempts.next_delay() is not None
    assert attempts.next_delay() is not None
    assert attempts.next_delay() is None
    assert attempts.retries == 2
    tight = Attempts(RetryPolicy(max_attempts=10, initial_backoff=5.0), timeout=1.0)
    assert tight.next_delay() is None  # the first backoff alone would overrun the deadline


def _inband(code: str) -> ProxyClientError:
    return proto.error_from_inband(
        pb.ExecuteError(error_code=code, error_message="msg"), request_id="r"
    )


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("MODEL_NOT_FOUND", ModelNotFoundError),
        ("INVALID_REQUEST", InvalidRequestError),
        ("EMPTY_REQUEST", InvalidRequestError),
        ("INPUT_TOO_LONG", InvalidRequestError),
        ("INVALID_SCHEMA", InvalidRequestError),
        ("MODEL_UNAVAILABLE", ModelUnavailableError),
        ("UPSTREAM_ERROR", UpstreamError),
        ("TIMEOUT", ProxyTimeoutError),
        ("CANCELLED", RequestCancelledError),
        ("PERMISSION_DENIED", PermissionDeniedError),
        ("SOMETHING_NEW", ServerError),
    ],
)
def test_inband_codes_map_to_the_hierarchy(code: str, cls: type[ProxyClientError]) -> None:
    error = _inband(code)
    assert type(error) is cls
    assert error.code == code
    assert error.request_id == "r"
    assert str(error).startswith("msg")
    assert error.hint
    assert error.hint in str(error)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RateLimitedError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ProxyTimeoutError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError),
        (grpc.StatusCode.NOT_FOUND, ModelNotFoundError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.CANCELLED, RequestCancelledError),
        (grpc.StatusCode.UNIMPLEMENTED, ProtocolError),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
    ],
)
def test_status_codes_map_to_the_hierarchy(
    status: grpc.StatusCode, cls: type[ProxyClientError]
) -> None:
    error = proto.error_from_status(status, "why", (), address=ADDRESS, request_id=None)
    assert type(error) is cls
    assert error.code == status.name
    assert "why" in str(error)


@pytest.mark.parametrize(
    ("trailing", "expected"),
    [
        ((("retry-after", "7"),), 7.0),
        ((("Retry-After", b"1.5"),), 1.5),
        ((("other", "x"), ("retry-after", "soon")), None),
        ((("retry-after", "-1"),), None),
        ((), None),
    ],
)
def test_retry_after_is_read_from_trailing_metadata(
    trailing: tuple[tuple[str, str | bytes], ...], expected: float | None
) -> None:
    error = proto.error_from_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", trailing, address=ADDRESS, request_id=None
    )
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == expected
    if expected is not None:
        assert f"{expected:g}s" in str(error)


def test_stream_contract_violations_are_protocol_errors() -> None:
    state = proto.StreamAssembler("r")
    state.feed(pb.StreamChunk(text_chunk="a"))
    with pytest.raises(ProtocolError, match="without its complete"):
        state.result(0)
    state.feed(pb.StreamChunk(complete=pb.StreamComplete(actual_model_used="m")))
    assert state.result(0).model == "m"
    with pytest.raises(ProtocolError, match="after the stream's complete"):
        state.feed(pb.StreamChunk(text_chunk="late"))


def test_execute_response_without_result_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        proto.result_from(pb.ExecuteResponse(request_id="r"), "r", 0)


def test_request_building_keeps_fragments_and_serialises_schemas() -> None:
    request = proto.build_request(
        proto.Content(["a", "b"], system="s", schema={"type": "object"}), model="m", request_id="r"
    )
    assert list(request.user_fragments) == ["a", "b"]
    assert list(request.system_fragments) == ["s"]
    assert request.model_name == "m"
    assert request.response_model_schema == '{"type": "object"}'
    bare = proto.build_request(proto.Content("hi"), model=None, request_id="r")
    assert list(bare.user_fragments) == ["hi"]
    assert not bare.HasField("model_name")
    assert not bare.HasField("response_model_schema")
