"""`health`: ask a running server's grpc.health.v1 service whether it is serving.

Exit 0 when SERVING, 1 otherwise, so that it can serve as a container HEALTHCHECK without
shipping a separate probe binary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import grpc
from click.core import ParameterSource

from adapters.grpc.health import probe
from llm_proxy_client import ConfigurationError, ConnectionSettings

DEFAULT_ADDRESS = "127.0.0.1:50051"


@click.command()
@click.option(
    "--server",
    envvar="LLM_PROXY_URL",
    help="llm-proxy://host:port (TLS) or llm-proxy+insecure://host:port, as for the other "
    "commands (also LLM_PROXY_URL).",
)
@click.option(
    "--address",
    envvar="LLM_PROXY_HEALTH_ADDRESS",
    help=f"host:port of the server, spoken to in plaintext unless --ca-file is given "
    f"(also LLM_PROXY_HEALTH_ADDRESS; default {DEFAULT_ADDRESS}).",
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
    server: str | None,
    address: str | None,
    service: str,
    timeout: float,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
) -> None:
    """Check the health of a running server; exit 0 only when it is SERVING."""
    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert-file and --key-file go together")
    target, credentials = _where(server, address, ca_file, cert_file, key_file)
    try:
        status = probe(target, service=service, timeout_s=timeout, credentials=credentials)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else "ERROR"
        click.echo(f"{target}: {name}", err=True)
        sys.exit(1)
    click.echo(f"{target}: {status}")
    sys.exit(0 if status == "SERVING" else 1)


def _where(
    server: str | None,
    address: str | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
) -> tuple[str, grpc.ChannelCredentials | None]:
    """The target and, for TLS, the credentials, from --server (a URL) or --address."""
    source = click.get_current_context().get_parameter_source
    given = {name: source(name) is ParameterSource.COMMANDLINE for name in ("server", "address")}
    if given["server"] and given["address"]:
        raise click.UsageError("give --server or --address, not both")
    # On the command line, either wins; from the environment, the health-specific one does.
    if server is not None and (given["server"] or address is None):
        try:
            settings = ConnectionSettings.create(
                server, ca_bundle=ca_file, client_cert=cert_file, client_key=key_file
            )
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--server") from None
        tls = settings.address.tls
        return settings.address.target, settings.channel_credentials() if tls else None
    credentials = None
    if ca_file is not None or cert_file is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_file.read_bytes() if ca_file is not None else None,
            private_key=key_file.read_bytes() if key_file is not None else None,
            certificate_chain=cert_file.read_bytes() if cert_file is not None else None,
        )
    return address or DEFAULT_ADDRESS, credentials
