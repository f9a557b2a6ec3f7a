"""Small builders shared by integration tests."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import grpc

from llm_proxy_client.generated import llm_proxy_pb2 as pb


def script(**steps: Any) -> str:
    """A prompt the scripted test models follow instead of echoing."""
    return json.dumps({"script": steps})


def request(
    *user: str,
    model: str | None = None,
    system: tuple[str, ...] = (),
    schema: str | None = None,
    request_id: str = "",
) -> pb.ExecuteRequest:
    message = pb.ExecuteRequest(
        user_fragments=list(user), system_fragments=list(system), request_id=request_id
    )
    if model is not None:
        message.model_name = model
    if schema is not None:
        message.response_model_schema = schema
    return message


async def collect(call: Any) -> list[pb.StreamChunk]:
    return [chunk async for chunk in call]


def kinds(chunks: list[pb.StreamChunk]) -> list[str]:
    return [chunk.WhichOneof("chunk_type") or "" for chunk in chunks]


async def read_chunk(call: Any) -> pb.StreamChunk | None:
    """The next chunk of a stream read with the read() API, or None at its end."""
    chunk = await call.read()
    if chunk is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from grpc-stubs
        return None
    assert isinstance(chunk, pb.StreamChunk)
    return chunk


def scrape(port: int) -> str:
    """The metrics endpoint's exposition text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def sample(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}`; label order in the exposition does not matter."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found_sample, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', found_sample))
        if found_sample.split("{")[0] == name and found == labels:
            return float(value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")
