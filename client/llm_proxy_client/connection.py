"""Where and how to connect: server URLs, credentials, channel options and the retry policy."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import grpc

from llm_proxy_client.errors import ConfigurationError, ProxyTimeoutError

DEFAULT_URL = "llm-proxy+insecure://127.0.0.1:50051"
DEFAULT_PORT = 50051
URL_ENV = "LLM_PROXY_URL"
# Names of environment variables, not secrets.
TOKEN_ENV = "LLM_PROXY_TOKEN"  # noqa: S105
TOKEN_FILE_ENV = "LLM_PROXY_TOKEN_FILE"  # noqa: S105
CA_BUNDLE_ENV = "LLM_PROXY_CA_BUNDLE"
CLIENT_CERT_ENV = "LLM_PROXY_CLIENT_CERT"
CLIENT_KEY_ENV = "LLM_PROXY_CLIENT_KEY"

ChannelT = TypeVar("ChannelT")

# vibectl's own schemes are accepted so one URL configures both vibectl and this client.
_SCHEMES: Mapping[str, bool] = {
    "llm-proxy": True,
    "llm-proxy+insecure": False,
    "vibectl-server": True,
    "vibectl-server-insecure": False,
}

# Keepalive matches vibectl's clients: a ping every 30 s notices dead peers behind NATs and load
# balancers during long generations. Pings are only sent while calls are active, so servers with
# gRPC's default ping policy never answer them with GOAWAY(too_many_pings).
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One server, or several (``host:port`` endpoints separated by commas) to balance over."""

    host: str
    port: int
    tls: bool
    token: str | None = field(default=None, repr=False)
    #: Every endpoint, the first being (host, port); more than one means a static list.
    endpoints: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.endpoints:
            object.__setattr__(self, "endpoints", ((self.host, self.port),))

    @property
    def target(self) -> str:
        """The gRPC target. One name goes to gRPC's DNS resolver, which returns every address
        it resolves to (a headless Service: one per replica); a list of endpoints becomes a
        static list of addresses, names in it resolved when the channel opens."""
        if len(self.endpoints) == 1:
            return _hostport(self.host, self.port)
        addresses = _resolve(self.endpoints)
        if all(":" not in ip for ip, _ in addresses):
            return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in addresses)
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in addresses)

    @property
    def is_loopback(self) -> bool:
        return all(_is_loopback(host) for host, _ in self.endpoints)

    def __str__(self) -> str:
        # Never echo the token: this string ends up in error messages and logs.
        scheme = "llm-proxy" if self.tls else "llm-proxy+insecure"
        return f"{scheme}://" + ",".join(_hostport(h, p) for h, p in self.endpoints)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(endpoints: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """Every endpoint as IP addresses, IPv4 first (gRPC's static lists hold one family)."""
    found: list[tuple[str, int]] = []
    for host, port in endpoints:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigurationError(f"cannot resolve {host!r}: {exc}") from None
        for family, _, _, _, sockaddr in infos:
            pair = (str(sockaddr[0]), port)
            if family in (socket.AF_INET, socket.AF_INET6) and pair not in found:
                found.append(pair)
    v4 = [pair for pair in found if ":" not in pair[0]]
    return v4 or found


def parse_server_url(url: str) -> ServerAddress:
    """Parse ``llm-proxy://[TOKEN@]host[:port][,host[:port]...]`` and its insecure and vibectl
    spellings; several endpoints are balanced round robin."""
    head, sep, rest = url.strip().partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not sep or "," not in netloc:
        return _parse_one(url)
    userinfo, at, hosts = netloc.rpartition("@")
    tail = rest[len(netloc) :]
    each = [_parse_one(f"{head}://{userinfo}{at}{host}{tail}") for host in hosts.split(",")]
    first = each[0]
    return ServerAddress(
        host=first.host,
        port=first.port,
        tls=first.tls,
        token=first.token,
        endpoints=tuple((a.host, a.port) for a in each),
    )


def _parse_one(url: str) -> ServerAddress:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"invalid server URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(
            f"unsupported server URL scheme {parts.scheme + '://' if parts.scheme else url!r}; "
            f"use one of {known}"
        )
    if not parts.hostname:
        raise ConfigurationError(f"server URL {url!r} has no host; expected {scheme}://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(
            f"server URL {url!r} has a path or query; expected {scheme}://[TOKEN@]host:port"
        )
    token = unquote(parts.username) if parts.username else None
    return ServerAddress(
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        tls=_SCHEMES[scheme],
        token=token or None,
    )


def resolve_token(
    *,
    explicit: str | None,
    token_file: str | os.PathLike[str] | None,
    url_token: str | None,
    env: Mapping[str, str],
) -> str | None:
    """The bearer token to send. Explicit arguments win over the URL, and both over ambient
    environment, so a command-line flag can always override what a shell exported."""
    if explicit:
        return explicit.strip()
    if token_file:
        return _read_token(token_file)
    if url_token:
        return url_token
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip()
    if env.get(TOKEN_FILE_ENV):
        return _read_token(env[TOKEN_FILE_ENV])
    return None


def _read_token(path: str | os.PathLike[str]) -> str:
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read token file {os.fspath(path)!r}: {exc}") from None
    if not token:
        raise ConfigurationError(f"token file {os.fspath(path)!r} is empty")
    return token


def read_ca_bundle(path: str | os.PathLike[str]) -> bytes:
    return _read_pem(path, "CA bundle", b"-----BEGIN CERTIFICATE-----", "certificate")


def _read_pem(path: str | os.PathLike[str], what: str, marker: bytes, holds: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {os.fspath(path)!r}: {exc}") from None
    if marker not in data:
        raise ConfigurationError(f"{what} {os.fspath(path)!r} holds no PEM {holds}")
    return data


def read_client_identity(
    cert: str | os.PathLike[str] | None, key: str | os.PathLike[str] | None
) -> tuple[bytes, bytes] | None:
    """The client certificate chain and private key for mutual TLS, or None without them."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("certificate", "key") if key is None else ("key", "certificate")
        raise ConfigurationError(
            f"a client {given} was given without its {missing}: mutual TLS needs both "
            f"(client_cert/client_key, --client-cert/--client-key, "
            f"{CLIENT_CERT_ENV}/{CLIENT_KEY_ENV})"
        )
    chain = _read_pem(cert, "client certificate", b"-----BEGIN CERTIFICATE-----", "certificate")
    private_key = _read_pem(key, "client key", b"PRIVATE KEY-----", "private key")
    return chain, private_key


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    address: ServerAddress
    token: str | None = field(repr=False)
    root_certificates: bytes | None
    tls_server_name: str | None
    #: (certificate chain, private key) PEM for mutual TLS.
    client_identity: tuple[bytes, bytes] | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        url: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ConnectionSettings:
        environ = os.environ if env is None else env
        address = parse_server_url(url or environ.get(URL_ENV) or DEFAULT_URL)
        bundle = ca_bundle or environ.get(CA_BUNDLE_ENV)
        # Like the CA bundle, a client identity only means something on a TLS connection, so an
        # exported one does not get in the way of plaintext servers.
        identity = (
            read_client_identity(
                client_cert or environ.get(CLIENT_CERT_ENV) or None,
                client_key or environ.get(CLIENT_KEY_ENV) or None,
            )
            if address.tls
            else None
        )
        return cls(
            address=address,
            token=resolve_token(
                explicit=token, token_file=token_file, url_token=address.token, env=environ
            ),
            root_certificates=read_ca_bundle(bundle) if bundle and address.tls else None,
            tls_server_name=tls_server_name,
            client_identity=identity,
        )

    def channel_options(self) -> list[tuple[str, str | int]]:
        options: list[tuple[str, str | int]] = [
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.primary_user_agent", "llm-proxy-client/0.1"),
            # gRPC's own reconnect backoff starts at 1 s; while it runs, calls fail at once, so
            # our retries would hit the same closed door. Keep it shorter than our first backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
            # Spread calls over every address the target has (several endpoints, or a DNS name
            # with one address per replica); an address that fails is skipped until it is back.
            ("grpc.lb_policy_name", "round_robin"),
        ]
        name = self.tls_server_name
        if name is None and len(self.address.endpoints) > 1:
            # A static list's authority is not a host name; TLS checks the first endpoint's.
            name = self.address.host
            options.append(("grpc.default_authority", _hostport(name, self.address.port)))
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        return options

    def channel_credentials(self) -> grpc.ChannelCredentials:
        chain, key = self.client_identity or (None, None)
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates, private_key=key, certificate_chain=chain
        )

    def open_channel(
        self,
        secure: Callable[..., ChannelT],
        insecure: Callable[..., ChannelT],
    ) -> ChannelT:
        """A channel to the server, from grpc's or grpc.aio's channel constructors."""
        options = self.channel_options()
        if self.address.tls:
            return secure(self.address.target, self.channel_credentials(), options=options)
        return insecure(self.address.target, options=options)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        # Sent as plain metadata rather than call credentials because gRPC refuses call
        # credentials on plaintext channels, and loopback tests run without TLS.
        if self.token:
            return (("authorization", f"Bearer {self.token}"),)
        return ()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries for UNAVAILABLE before any response data arrived; everything else fails at once."""

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 3.0
    multiplier: float = 2.0
    #: Share of each delay that is randomised so many clients don't reconnect in lockstep.
    jitter: float = 0.5

    def delay(self, retry: int, rng: random.Random) -> float:
        base = min(self.max_backoff, self.initial_backoff * self.multiplier**retry)
        return base * (1 - self.jitter) + rng.uniform(0, base * self.jitter)


NO_RETRY = RetryPolicy(max_attempts=1)


class Attempts:
    """One call's retry state: how many tries remain and how much of its deadline is left."""

    def __init__(
        self, policy: RetryPolicy, timeout: float | None, rng: random.Random | None = None
    ) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.retries = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def remaining(self) -> float | None:
        """Time left for the next attempt, or None when the call has no deadline."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ProxyTimeoutError("the call's deadline passed while retrying")
        return left

    def next_delay(self) -> float | None:
        """How long to wait before retrying, or None when no retry is left within budget."""
        if self.retries + 1 >= self.policy.max_attempts:
            return None
        delay = self.policy.delay(self.retries, self._rng)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None
        self.retries += 1
        return delay
