"""`llm-proxy prompt` with options (-o), attachments (-a), a conversation read as JSON, and the
tool calls of an answer, as real subprocesses against the real server and llm-echo."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.integration.conftest import Proxy
from tests.integration.test_client_cli import cli, server

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))


async def test_options_and_an_attachment(proxy: Proxy, tmp_path: Path) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(PNG)
    status, out, err = await cli(
        "prompt", "What is this?", "-m", "echo", "-o", "example_bool", "true",
        "-a", str(image), "--no-stream", "--server", server(proxy),
    )  # fmt: skip
    assert status == 0, err
    answer = json.loads(out)
    assert answer["options"] == {"example_bool": True}
    assert answer["attachments"] == [
        {"type": "image/png", "path": None, "url": None, "id": hashlib.sha256(PNG).hexdigest()}
    ]


async def test_an_option_the_model_refuses_exits_with_the_valid_list(proxy: Proxy) -> None:
    status, _, err = await cli(
        "prompt", "hi", "-m", "echo", "-o", "temperature", "0.2", "--server", server(proxy)
    )
    assert status == 6  # invalid request
    assert "temperature" in err
    assert "example_bool (boolean)" in err
    assert "Traceback" not in err


async def test_a_conversation_read_as_json_then_the_next_turn(proxy: Proxy, tmp_path: Path) -> None:
    conversation = tmp_path / "chat.json"
    conversation.write_text(
        json.dumps(
            [
                {"role": "system", "content": "You do arithmetic."},
                {"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": "4"},
            ]
        )
    )
    status, out, err = await cli(
        "prompt", "And times 3?", "-m", "echo", "--conversation", str(conversation),
        "--server", server(proxy),
    )  # fmt: skip
    assert status == 0, err
    answer = json.loads(out)
    assert (answer["prompt"], answer["system"]) == ("And times 3?", "You do arithmetic.")
    assert answer["previous"] == [{"prompt": "What is 2 + 2?"}]


async def test_a_tool_round_trip_through_conversation_files(proxy: Proxy, tmp_path: Path) -> None:
    asks = json.dumps({"prompt": "version?", "tool_calls": [{"name": "llm_version"}]})
    first = tmp_path / "first.json"
    first.write_text(json.dumps([{"role": "user", "content": asks}]))
    status, _, err = await cli(
        "prompt", "-m", "echo", "--conversation", str(first), "--tool", "llm_version",
        "--server", server(proxy),
    )  # fmt: skip
    assert status == 0, err
    assert "the model asks for tool llm_version {}" in err
    call_id = err.split("(call id ")[1].split(")")[0]
    second = tmp_path / "second.json"
    second.write_text(
        json.dumps(
            [
                {"role": "user", "content": asks},
                {
                    "role": "assistant",
                    "parts": [{"tool_call": {"name": "llm_version", "call_id": call_id}}],
                },
                {
                    "role": "tool",
                    "parts": [
                        {"tool_result": {"call_id": call_id, "name": "llm_version", "output": "9"}}
                    ],
                },
            ]
        )
    )
    status, out, err = await cli(
        "prompt", "-m", "echo", "--conversation", str(second), "--tool", '{"name": "llm_version"}',
        "--server", server(proxy),
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["tool_results"] == [
        {"name": "llm_version", "output": "9", "tool_call_id": call_id}
    ]
    assert "asks for tool" not in err


async def test_a_conversation_that_does_not_read_is_a_usage_error(
    proxy: Proxy, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"role": "robot", "content": "hi"}]')
    status, _, err = await cli(
        "prompt", "-m", "echo", "--conversation", str(bad), "--server", server(proxy)
    )
    assert status != 0
    assert "message 0: role must be one of system, user, assistant, tool" in err
    assert "Traceback" not in err
