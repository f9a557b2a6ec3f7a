"""`llm-proxy prompt` and `llm-proxy models` against the fake server: output, exit statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from infrastructure.cli import main
from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.support.fake_proxy import Context, FakeProxy, StreamHandler, free_port


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin, env={"LLM_PROXY_URL": None})
    return result.exit_code, result.stdout, result.stderr


def test_prompt_streams_and_reports_usage(fake: FakeProxy) -> None:
    status, out, err = invoke(
        "prompt", "hello world", "-m", "markov", "-s", "sys", "--usage", "--server", fake.url
    )
    assert status == 0, err
    assert out == "[sys] hello world\n"
    assert "model markov" in err
    assert "input 2, output 3" in err
    (call,) = fake.calls_to("StreamExecute")
    assert isinstance(call.request, pb.ExecuteRequest)
    assert call.request.model_name == "markov"


def test_prompt_no_stream_token_and_stdin(fake: FakeProxy, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("file-token\n")
    status, out, _ = invoke(
        "prompt", "--no-stream", "--server", fake.url, "--token-file", str(token), stdin="piped"
    )
    assert status == 0
    assert out == "piped\n"
    (call,) = fake.calls_to("Execute")
    assert call.metadata["authorization"] == "Bearer file-token"
    invoke("prompt", "x", "--server", fake.url, "--token", "flag-token", "--no-stream")
    assert fake.calls_to("Execute")[1].metadata["authorization"] == "Bearer flag-token"


def test_server_url_comes_from_the_environment(fake: FakeProxy) -> None:
    result = CliRunner().invoke(main, ["models"], env={"LLM_PROXY_URL": fake.url})
    assert result.exit_code == 0
    assert "fake 0.0-fake" in result.stdout


def test_models_lists_models_aliases_and_default(fake: FakeProxy) -> None:
    status, out, _ = invoke("models", "--server", fake.url)
    assert status == 0
    assert "* echo  (aliases: parrot)" in out
    assert "  markov" in out
    status, out, _ = invoke("models", "--json", "--server", fake.url)
    catalog = json.loads(out)
    assert catalog["default_model"] == "echo"
    assert catalog["models"][0]["aliases"] == ["parrot"]


def _abort(status: grpc.StatusCode, trailing: tuple[tuple[str, str], ...] = ()) -> StreamHandler:
    async def handler(
        request: pb.ExecuteRequest, context: Context
    ) -> AsyncIterator[pb.StreamChunk]:
        await context.abort(status, f"{status.name.lower()} from fake", trailing_metadata=trailing)
        yield pb.StreamChunk()

    return handler


def _inband(code: str) -> StreamHandler:
    async def handler(
        request: pb.ExecuteRequest, context: Context
    ) -> AsyncIterator[pb.StreamChunk]:
        yield pb.StreamChunk(error=pb.ExecuteError(error_code=code, error_message=f"{code} here"))

    return handler


async def _hang(request: pb.ExecuteRequest, context: Context) -> AsyncIterator[pb.StreamChunk]:
    await asyncio.sleep(5)
    yield pb.StreamChunk()


@pytest.mark.parametrize(
    ("handler", "status", "says"),
    [
        (_abort(grpc.StatusCode.UNAUTHENTICATED), 3, "LLM_PROXY_TOKEN"),
        (_abort(grpc.StatusCode.PERMISSION_DENIED), 4, "permission_denied from fake"),
        (_inband("MODEL_NOT_FOUND"), 5, "infrastructure.cli models"),
        (_inband("INPUT_TOO_LONG"), 6, "INPUT_TOO_LONG here"),
        (_abort(grpc.StatusCode.INVALID_ARGUMENT), 6, "Fix the request"),
        (
            _abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after", "12"),)),
            7,
            "Retry after 12s",
        ),
        (_inband("UPSTREAM_ERROR"), 8, "UPSTREAM_ERROR here"),
        (_inband("MODEL_UNAVAILABLE"), 8, "operator"),
        (_abort(grpc.StatusCode.UNAVAILABLE), 9, "server is running"),
        (_inband("TIMEOUT"), 10, "timeout"),
        (_hang, 10, "deadline"),
        (_inband("CANCELLED"), 11, "cancelled"),
        (_abort(grpc.StatusCode.INTERNAL), 1, "server logs"),
    ],
)
def test_each_error_kind_has_its_exit_status_and_advice(
    fake: FakeProxy, handler: StreamHandler, status: int, says: str
) -> None:
    fake.on_stream = handler
    code, out, err = invoke("prompt", "x", "--server", fake.url, "--timeout", "1")
    assert code == status, err
    assert err.startswith("llm-proxy: error: ")
    assert says in err
    assert "Traceback" not in err
    assert out == ""


def test_partial_answer_ends_its_line_before_the_error(fake: FakeProxy) -> None:
    async def cut(request: pb.ExecuteRequest, context: Context) -> AsyncIterator[pb.StreamChunk]:
        yield pb.StreamChunk(text_chunk="partial")
        await context.abort(grpc.StatusCode.UNAVAILABLE, "gone")

    fake.on_stream = cut
    code, out, err = invoke("prompt", "x", "--server", fake.url)
    assert code == 9
    assert out == "partial\n"
    assert "not retried" in err
    assert len(fake.calls_to("StreamExecute")) == 1


def test_configuration_errors_exit_2() -> None:
    code, _, err = invoke("prompt", "x", "--server", "http://nope:1")
    assert code == 2
    assert "llm-proxy+insecure://" in err
    code, _, err = invoke("models", "--server", "llm-proxy://h:1", "--ca-bundle", "/nonexistent")
    assert code == 2
    assert "CA bundle" in err


def test_unreachable_server_exits_9_quickly() -> None:
    url = f"llm-proxy+insecure://127.0.0.1:{free_port()}"
    code, _, err = invoke("models", "--server", url, "--timeout", "2")
    assert code == 9
    assert "cannot reach llm-proxy" in err
