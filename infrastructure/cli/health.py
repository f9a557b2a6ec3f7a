"""`health`: ask a running server's grpc.health.v1 service whether it is serving.

Exit 0 when SERVING, 1 otherwise, so that it can serve as a container HEALTHCHECK without
shipping a separate probe binary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import grpc

from adapters.grpc.health import probe

DEFAULT_ADDRESS = "127.0.0.1:50051"


@click.command()
@click.option(
    "--address",
    envvar="LLM_PROXY_HEALTH_ADDRESS",
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="host:port of the server (also LLM_PROXY_HEALTH_ADDRESS).",
)
@click.option(
    "--service",
    default="",
    help="Service to ask about; empty means the whole server.",
)
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="LLM_PROXY_HEALTH_CA_FILE",
    help="Speak TLS, trusting this CA (the server's server.tls certificate issuer).",
)
@click.option(
    "--cert-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="LLM_PROXY_HEALTH_CERT_FILE",
    help="Client certificate, for a server that requires mutual TLS.",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="LLM_PROXY_HEALTH_KEY_FILE",
    help="Private key of --cert-file.",
)
def health(
    address: str,
    service: str,
    timeout: float,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
) -> None:
    """Check the health of a running server; exit 0 only when it is SERVING."""
    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert-file and --key-file go together")
    credentials = None
    if ca_file is not None or cert_file is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_file.read_bytes() if ca_file is not None else None,
            private_key=key_file.read_bytes() if key_file is not None else None,
            certificate_chain=cert_file.read_bytes() if cert_file is not None else None,
        )
    try:
        status = probe(address, service=service, timeout_s=timeout, credentials=credentials)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else "ERROR"
        click.echo(f"{address}: {name}", err=True)
        sys.exit(1)
    click.echo(f"{address}: {status}")
    sys.exit(0 if status == "SERVING" else 1)
