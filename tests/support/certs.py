"""Throwaway private CAs and the certificates they sign, for TLS tests: made by the same code
as `llm-proxy certs generate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infrastructure import certificates


@dataclass(frozen=True)
class Certs:
    ca_pem: bytes
    server_key_pem: bytes
    server_cert_pem: bytes


def make_certs(hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Certs:
    """A CA and a server certificate for `hosts`, made as `llm-proxy certs generate` makes them."""
    pki = certificates.generate(hosts, days=1)
    return Certs(
        ca_pem=pki.ca.cert_pem,
        server_key_pem=pki.server.key_pem,
        server_cert_pem=pki.server.cert_pem,
    )


@dataclass(frozen=True)
class Pki:
    """Files as `llm-proxy certs generate` writes them: a CA, a server and one client."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path

    def tls(self, *, mutual: bool = False) -> dict[str, Any]:
        section: dict[str, Any] = {"cert_file": str(self.server), "key_file": str(self.server_key)}
        if mutual:
            section["client_ca_file"] = str(self.ca)
        return {"server": {"tls": section}}


def make_pki(directory: Path, client: str = "alice") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    pki = certificates.generate(("127.0.0.1", "localhost"), (client,), days=1)
    files = {
        "ca.pem": pki.ca.cert_pem,
        "server.pem": pki.server.cert_pem,
        "server-key.pem": pki.server.key_pem,
        "client.pem": pki.clients[client].cert_pem,
        "client-key.pem": pki.clients[client].key_pem,
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return Pki(*(directory / name for name in files))
