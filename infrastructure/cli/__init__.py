"""The llm-proxy command line. Each command family lives in its own module and is added here."""

from __future__ import annotations

import os

# gRPC's C core writes its own lines to stderr (six "Handshake failed" lines for one client
# using TLS against a plaintext server, on both ends); every command reports failures itself,
# in one line. grpc reads this once, when it is first imported, so it must be set first; an
# exported GRPC_VERBOSITY still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-proxy")
def main() -> None:
    """llm-proxy: one authenticated gRPC endpoint for every model `llm` can reach."""


# Command families register themselves here, one line each.
from infrastructure.cli.client_commands import models_command, prompt_command  # noqa: E402
from infrastructure.cli.config_commands import config_group  # noqa: E402
from infrastructure.cli.health import health  # noqa: E402
from infrastructure.cli.security_commands import certs_group, token_group  # noqa: E402
from infrastructure.cli.serve import serve  # noqa: E402
from infrastructure.cli.usage_commands import (  # noqa: E402
    ledger_group,
    limits_group,
    usage_group,
)

main.add_command(serve)
main.add_command(config_group)
main.add_command(token_group)
main.add_command(certs_group)
main.add_command(health)
main.add_command(prompt_command)
main.add_command(models_command)
main.add_command(usage_group)
main.add_command(ledger_group)
main.add_command(limits_group)
