"""Client commands: talk to a running llm-proxy (`prompt`, `models`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from infrastructure.cli.common import as_invoked
from llm_proxy_client import (
    DEFAULT_URL,
    Attachment,
    AuthenticationError,
    ConfigurationError,
    ExecuteResult,
    InvalidRequestError,
    Message,
    ModelNotFoundError,
    PermissionDeniedError,
    ProxyClient,
    ProxyClientError,
    ProxyTimeoutError,
    RateLimitedError,
    RequestCancelledError,
    Tool,
    UnavailableError,
    UpstreamError,
)
from llm_proxy_client.conversation import conversation_from_json

F = TypeVar("F", bound=Callable[..., Any])

# One exit status per kind of failure, so scripts can tell "fix your token" from "try later".
# Order matters: subclasses before their bases.
EXIT_STATUS: tuple[tuple[type[ProxyClientError], int], ...] = (
    (ConfigurationError, 2),
    (AuthenticationError, 3),
    (PermissionDeniedError, 4),
    (ModelNotFoundError, 5),
    (InvalidRequestError, 6),
    (RateLimitedError, 7),
    (UpstreamError, 8),
    (UnavailableError, 9),
    (ProxyTimeoutError, 10),
    (RequestCancelledError, 11),
)
OTHER_ERROR_STATUS = 1
INTERRUPTED_STATUS = 130

EXIT_HELP = (
    "Exit status: 0 ok, 1 server fault, 2 bad configuration, 3 authentication, 4 permission, "
    "5 unknown model, 6 invalid request, 7 rate limited, 8 model/upstream failure, "
    "9 server unreachable, 10 timeout, 11 cancelled."
)


def exit_status(error: ProxyClientError) -> int:
    return next(
        (status for cls, status in EXIT_STATUS if isinstance(error, cls)), OTHER_ERROR_STATUS
    )


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and how to reach the server, from the options every client command shares."""

    server: str
    token: str | None
    token_file: Path | None
    ca_bundle: Path | None
    client_cert: Path | None
    client_key: Path | None
    timeout: float

    def client(self) -> ProxyClient:
        return ProxyClient(
            self.server,
            token=self.token,
            token_file=self.token_file,
            ca_bundle=self.ca_bundle,
            client_cert=self.client_cert,
            client_key=self.client_key,
            timeout=self.timeout,
        )


def _file_option(flag: str, about: str) -> Callable[[F], F]:
    return click.option(flag, type=click.Path(path_type=Path, dir_okay=False), help=about)


def connection_options(command: F) -> F:
    """Add the connection options; the command receives them as one ``connection`` argument."""

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        fields = {field.name: kwargs.pop(field.name) for field in dataclasses.fields(Connection)}
        return command(connection=Connection(**fields), **kwargs)

    options = [
        click.option(
            "--server",
            "server",
            envvar="LLM_PROXY_URL",
            default=DEFAULT_URL,
            show_default=True,
            help="llm-proxy://[TOKEN@]host:port (TLS) or llm-proxy+insecure://host:port "
            "(also LLM_PROXY_URL).",
        ),
        click.option("--token", help="Bearer token (default: URL, LLM_PROXY_TOKEN)."),
        _file_option(
            "--token-file", "Read the bearer token from this file (also LLM_PROXY_TOKEN_FILE)."
        ),
        _file_option(
            "--ca-bundle",
            "PEM CA bundle for a server with a private CA (also LLM_PROXY_CA_BUNDLE).",
        ),
        _file_option(
            "--client-cert",
            "PEM client certificate, for a server that requires mutual TLS "
            "(also LLM_PROXY_CLIENT_CERT).",
        ),
        _file_option("--client-key", "Private key of --client-cert (also LLM_PROXY_CLIENT_KEY)."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=120.0,
            show_default=True,
            help="Seconds to wait for the whole call, retries included.",
        ),
    ]
    wrapped: F = run  # type: ignore[assignment]
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn client errors into one readable line on stderr and the matching exit status."""
    try:
        yield
    except ProxyClientError as exc:
        click.echo(f"llm-proxy: error: {as_invoked(str(exc))}", err=True)
        sys.exit(exit_status(exc))
    except KeyboardInterrupt:
        click.echo("\nllm-proxy: interrupted", err=True)
        sys.exit(INTERRUPTED_STATUS)


@click.command("prompt", epilog=EXIT_HELP)
@click.argument("text", required=False)
@click.option("--model", "-m", help="Model id or alias (default: the server's default model).")
@click.option("--system", "-s", help="System prompt.")
@click.option("--schema", help="JSON Schema the answer must follow (JSON text).")
@click.option(
    "--option",
    "-o",
    "options",
    type=(str, str),
    multiple=True,
    metavar="NAME VALUE",
    help="A model option, e.g. -o temperature 0.2 (VALUE is JSON, else text). Repeatable.",
)
@click.option(
    "--attachment",
    "-a",
    "attachments",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    multiple=True,
    help="A file for the model (sent as bytes, media type from its name). Repeatable.",
)
@click.option(
    "--tool",
    "tools",
    multiple=True,
    metavar="NAME|JSON",
    help='A tool the model may ask for: a name, or {"name", "description", "input_schema"} as '
    "JSON. The model's calls are printed to stderr; this command never runs them. Repeatable.",
)
@click.option(
    "--conversation",
    "conversation",
    type=click.File("r"),
    help="The conversation so far as a JSON file ('-': standard input); TEXT, if given, is "
    "the next user turn. See docs/client.md.",
)
@click.option("--no-stream", is_flag=True, help="Wait for the whole answer instead of streaming.")
@click.option("--usage", "-u", is_flag=True, help="Print model and token usage to stderr.")
@connection_options
def prompt_command(
    text: str | None,
    model: str | None,
    system: str | None,
    schema: str | None,
    options: tuple[tuple[str, str], ...],
    attachments: tuple[Path, ...],
    tools: tuple[str, ...],
    conversation: TextIO | None,
    no_stream: bool,
    usage: bool,
    connection: Connection,
) -> None:
    """Send TEXT (or standard input) to the proxy and print the answer as it arrives.

    Tools the model asks for are printed to stderr; run them and send their results in the
    next request's --conversation."""
    if text is None and conversation is None:
        if sys.stdin.isatty():
            raise click.UsageError("give the prompt as an argument or on standard input")
        text = sys.stdin.read()
    with reported_errors(), connection.client() as client:
        content: dict[str, Any] = {
            "model": model,
            "system": system,
            "schema": schema,
            "options": {name: _option_value(value) for name, value in options},
            "attachments": [_attachment(path) for path in attachments],
            "tools": [_tool(spec) for spec in tools],
            "messages": _conversation(conversation),
        }
        if no_stream:
            result = client.execute(text, **content)
            click.echo(result.text)
        else:
            with client.stream(text, **content) as stream:
                try:
                    for chunk in stream:
                        click.echo(chunk, nl=False)
                        sys.stdout.flush()
                except ProxyClientError:
                    if stream.text:
                        click.echo()  # end the partial line so the error starts on its own
                    raise
                click.echo()
                result = stream.result()
        for call in result.tool_calls:
            click.echo(
                f"llm-proxy: the model asks for tool {call.name} "
                f"{json.dumps(dict(call.arguments))} (call id {call.call_id})",
                err=True,
            )
        if usage:
            click.echo(_usage_line(result), err=True)


def _option_value(text: str) -> object:
    # As llm's -o: a value that reads as JSON (0.2, 100, true, ["a"]) is that, else it is text.
    try:
        value: object = json.loads(text)
    except ValueError:
        return text
    return value


def _attachment(path: Path) -> Attachment:
    try:
        return Attachment.from_path(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--attachment") from None


def _tool(spec: str) -> Tool:
    if not spec.lstrip().startswith("{"):
        return Tool(spec)
    try:
        data = json.loads(spec)
        return Tool(str(data["name"]), str(data.get("description", "")), data.get("input_schema"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.BadParameter(
            f'expected a name or {{"name": ..., "input_schema": {{...}}}}: {exc}',
            param_hint="--tool",
        ) from None


def _conversation(source: TextIO | None) -> list[Message]:
    if source is None:
        return []
    base = Path(source.name).parent if source.name not in ("<stdin>", "-") else Path.cwd()
    return conversation_from_json(source.read(), base=base)


def _usage_line(result: ExecuteResult) -> str:
    m = result.metrics
    tokens = ", ".join(
        f"{name} {value}"
        for name, value in (("input", m.input_tokens), ("output", m.output_tokens))
        if value is not None
    )
    parts = [f"model {result.model}", tokens or "tokens not reported", f"{m.duration_ms} ms"]
    if m.cost_usd is not None:
        parts.append(f"${m.cost_usd:.6f}")
    return "llm-proxy: " + "; ".join(parts)


@click.command("models", epilog=EXIT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
@connection_options
def models_command(
    as_json: bool,
    connection: Connection,
) -> None:
    """List the models (and aliases) the proxy serves; * marks the default."""
    with reported_errors(), connection.client() as client:
        info = client.server_info()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "server": {"name": info.server_name, "version": info.server_version},
                    "default_model": info.default_model,
                    "models": [
                        {
                            "id": m.model_id,
                            "display_name": m.display_name,
                            "provider": m.provider,
                            "streaming": m.supports_streaming,
                            "aliases": sorted(_aliases(info.aliases, m.model_id, m.aliases)),
                        }
                        for m in info.models
                    ],
                },
                indent=2,
            )
        )
        return
    name = " ".join(part for part in (info.server_name, info.server_version) if part)
    click.echo(f"{name or 'llm-proxy'} at {client.address}")
    for m in info.models:
        marker = "*" if m.model_id == info.default_model else " "
        aliases = sorted(_aliases(info.aliases, m.model_id, m.aliases))
        line = f"{marker} {m.model_id}"
        if aliases:
            line += f"  (aliases: {', '.join(aliases)})"
        if not m.supports_streaming:
            line += "  [no streaming]"
        click.echo(line)


def _aliases(table: Mapping[str, str], model_id: str, own: tuple[str, ...]) -> set[str]:
    return set(own) | {alias for alias, target in table.items() if target == model_id}
