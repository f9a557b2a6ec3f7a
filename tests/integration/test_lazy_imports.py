"""A server imports what its configuration uses and nothing else: each case starts the real
server in a fresh interpreter (this one has imported everything already) and reports which
optional packages that interpreter holds once it listens."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.commands import run_sync
from tests.support.openai_standin import running_standin

# Starts the server as `serve` does, notes what it imported once listening, asks the model
# named in argv[2] (if any) over gRPC, stops it, and prints what it found.
_PROBE = """
import asyncio, json, pathlib, sys
import grpc
from infrastructure.config import load_settings
from infrastructure.server_runner import build_container, start
from llm_proxy_client.generated import llm_proxy_pb2 as pb, llm_proxy_pb2_grpc as pb_grpc

async def main():
    settings = load_settings(pathlib.Path(sys.argv[1]))
    running = await start(build_container(settings), announce=False)
    openai = sys.modules.get("openai")
    found = {
        "roots": sorted({name.split(".")[0] for name in sys.modules}),
        "openai": None if openai is None else type(openai).__name__,
    }
    if len(sys.argv) > 2:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.VibectlLLMProxyStub(channel)
            answer = await stub.Execute(
                pb.ExecuteRequest(user_fragments=["hello"], model_name=sys.argv[2])
            )
            found["answer"] = answer.success.response_text
    await running.stop(0)
    return found

print(json.dumps(asyncio.run(main())))
"""

OPTIONAL = ("uvicorn", "opentelemetry", "redis", "asyncpg", "prometheus_client")


def _imported(tmp_path: Path, config: dict[str, Any], *ask: str) -> dict[str, Any]:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    user_dir = tmp_path / "llm-user"
    user_dir.mkdir(exist_ok=True)
    environment = {
        **os.environ,
        "LLM_USER_PATH": str(user_dir),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    environment.pop("OPENAI_API_KEY", None)
    completed = run_sync(
        sys.executable, "-c", _PROBE, str(path), *ask, env=environment, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return result


BASE = {"server": {"port": 0}, "auth": {"enabled": False}, "ledger": {"backend": "none"}}


def test_a_server_without_http_metrics_tracing_or_redis_imports_none_of_them(
    tmp_path: Path,
) -> None:
    found = _imported(tmp_path, {**BASE, "http": {"enabled": False}})
    assert not set(OPTIONAL) & set(found["roots"])
    # No OpenAI model is served without a key: the SDK stays a stand-in, never imported.
    assert found["openai"] == "DeferredModule"


def test_the_http_api_when_on_brings_its_server_and_nothing_else(tmp_path: Path) -> None:
    found = _imported(tmp_path, {**BASE, "http": {"enabled": True, "port": 0}})
    assert "uvicorn" in found["roots"]
    assert not (set(OPTIONAL) - {"uvicorn"}) & set(found["roots"])
    assert found["openai"] == "DeferredModule"


def test_a_served_openai_model_has_its_sdk_imported_before_the_first_call(tmp_path: Path) -> None:
    with running_standin(["hi"]) as state:
        user_dir = tmp_path / "llm-user"
        user_dir.mkdir()
        (user_dir / "extra-openai-models.yaml").write_text(
            yaml.safe_dump(
                [{"model_id": "local-gpt", "model_name": "stand-in", "api_base": state.api_base}]
            )
        )
        found = _imported(
            tmp_path,
            {**BASE, "http": {"enabled": False}, "models": {"serve": ["local-gpt"]}},
            "local-gpt",
        )
    assert found["openai"] == "module"
    assert found["answer"] == "hi"
    assert len(state.requests) == 1
