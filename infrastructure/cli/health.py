"""`health`: ask a running server's grpc.health.v1 service whether it is serving.

Exit 0 when SERVING, 1 otherwise, so that it can serve as a container HEALTHCHECK without
shipping a separate probe binary.
"""

from __future__ import annotations

import sys

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
def health(address: str, service: str, timeout: float) -> None:
    """Check the health of a running server; exit 0 only when it is SERVING."""
    try:
        status = probe(address, service=service, timeout_s=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else "ERROR"
        click.echo(f"{address}: {name}", err=True)
        sys.exit(1)
    click.echo(f"{address}: {status}")
    sys.exit(0 if status == "SERVING" else 1)
