"""A throwaway private CA and a server certificate it signs, for TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infrastructure import certificates


@dataclass(frozen=True)
class Certs:
    ca_pem: bytes
    server_key_pem: bytes
    server_cert_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certs(hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Certs:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("llm-proxy test CA"))
        .issuer_name(_name("llm-proxy test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Certs(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_key_pem=server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        server_cert_pem=server_cert.public_bytes(serialization.Encoding.PEM),
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
