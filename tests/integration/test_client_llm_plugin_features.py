"""The `llm` CLI through the plugin, in subprocesses against the real server: options
(`-o`, `llm models --options`), conversations (`llm chat`, `llm -c`), attachments (`-a`) and
tools (`-T`), which llm runs on the client as it does for every model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.integration.conftest import Proxy
from tests.support.commands import LLM, run

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(48))


async def llm_cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> tuple[int, str, str]:
    return await run(LLM, *args, env=env, stdin=stdin)


def environment(proxy: Proxy, tmp_path: Path) -> dict[str, str]:
    return {
        "LLM_PROXY_URL": f"llm-proxy+insecure://{proxy.address}",
        "LLM_USER_PATH": str(tmp_path / "llm-user"),
    }


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object printed in `text` (llm-echo's answers), in order."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


async def test_options_are_honoured_and_checked_and_listed(proxy: Proxy, tmp_path: Path) -> None:
    env = environment(proxy, tmp_path)
    status, out, err = await llm_cli(
        "-m", "proxy/echo", "-o", "example_bool", "true", "hi", "--no-stream", env=env
    )
    assert status == 0, err
    assert json.loads(out)["options"] == {"example_bool": True}

    status, out, err = await llm_cli("-m", "proxy/echo", "-o", "temperature", "0.2", "hi", env=env)
    assert status != 0
    assert "temperature" in err
    assert "Extra inputs are not permitted" in err

    status, out, err = await llm_cli("models", "--options", "-q", "proxy/echo", env=env)
    assert status == 0, err
    listing = out[out.index("llm-proxy: proxy/echo") :]
    assert "example_bool: boolean" in listing
    assert "Example boolean option" in listing
    assert "image/png" in listing
    assert "- tools" in listing


async def test_a_three_turn_llm_chat_reaches_the_model_in_order(
    proxy: Proxy, tmp_path: Path
) -> None:
    env = environment(proxy, tmp_path)
    status, out, err = await llm_cli(
        "chat", "-m", "proxy/echo", "-s", "be brief", env=env, stdin="first\nsecond\nthird\nquit\n"
    )
    assert status == 0, err
    answers = json_objects(out)
    assert [a["prompt"] for a in answers] == ["first", "second", "third"]
    assert [a["previous"] for a in answers] == [
        [],
        [{"prompt": "first"}],
        [{"prompt": "first"}, {"prompt": "second"}],
    ]
    assert all(a["system"] == "be brief" for a in answers)


async def test_llm_continue_sends_the_logged_conversation(proxy: Proxy, tmp_path: Path) -> None:
    env = environment(proxy, tmp_path)
    status, _, err = await llm_cli("-m", "proxy/echo", "one", env=env)
    assert status == 0, err
    status, out, err = await llm_cli("-c", "two", "--no-stream", env=env)
    assert status == 0, err
    answer = json.loads(out)
    assert (answer["prompt"], answer["previous"]) == ("two", [{"prompt": "one"}])


async def test_an_image_attachment_from_llm(proxy: Proxy, tmp_path: Path) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(PNG)
    env = environment(proxy, tmp_path)
    status, out, err = await llm_cli(
        "-m", "proxy/echo", "What is this?", "-a", str(image), "--no-stream", env=env
    )
    assert status == 0, err
    # Sent as bytes: the server's model sees the content, never the client's path.
    assert json.loads(out)["attachments"] == [
        {"type": "image/png", "path": None, "url": None, "id": hashlib.sha256(PNG).hexdigest()}
    ]


async def test_a_tool_round_trip_through_llm(proxy: Proxy, tmp_path: Path) -> None:
    env = environment(proxy, tmp_path)
    asks = json.dumps({"prompt": "which version?", "tool_calls": [{"name": "llm_version"}]})
    status, out, err = await llm_cli(
        "-m", "proxy/echo", "-T", "llm_version", "--td", asks, "--no-stream", env=env
    )
    assert status == 0, err
    answers = [a for a in json_objects(out) if "tool_results" in a]
    # llm ran the tool here, on the client, and sent its output back in the next request.
    assert len(answers) == 1, out
    (result,) = answers[0]["tool_results"]
    assert result["name"] == "llm_version"
    assert result["output"] == "0.36"
    assert result["tool_call_id"]
