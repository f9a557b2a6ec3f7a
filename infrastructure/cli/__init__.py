"""The llm-proxy command line. Each command family lives in its own module and is added here."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm-proxy")
def main() -> None:
    """llm-proxy: one authenticated gRPC endpoint for every model `llm` can reach."""
