"""GetServerInfo describes what is served and under which limits."""

from __future__ import annotations

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from tests.integration.conftest import ProxyFactory


async def test_server_info_lists_models_aliases_default_and_limits(
    start_proxy: ProxyFactory,
) -> None:
    proxy = await start_proxy(
        {
            "server": {"name": "team-proxy"},
            "models": {"default": "echo", "aliases": {"fast": "echo", "chain": "markov"}},
            "limits": {"max_input_length": 5000, "request_timeout_seconds": 30},
        }
    )
    info = await proxy.stub.GetServerInfo(pb.GetServerInfoRequest())
    by_id = {model.model_id: model for model in info.available_models}
    assert {"echo", "markov", "scripted", "scripted-async"} <= set(by_id)
    assert "echo-needs-key" not in by_id, "a model without its key must not be served by default"
    assert info.default_model == "echo"
    assert info.server_name == "team-proxy"
    assert info.server_version
    assert info.model_aliases["fast"] == "echo"
    assert info.model_aliases["chain"] == "markov"
    assert "fast" in by_id["echo"].aliases
    assert by_id["echo"].supports_streaming
    assert by_id["echo"].provider
    assert info.limits.max_input_length == 5000
    assert info.limits.request_timeout_seconds == 30
    assert not info.limits.HasField("max_requests_per_minute")


async def test_allow_list_limits_served_models(start_proxy: ProxyFactory) -> None:
    proxy = await start_proxy({"models": {"serve": ["scripted*"], "default": "scripted"}})
    info = await proxy.stub.GetServerInfo(pb.GetServerInfoRequest())
    assert sorted(m.model_id for m in info.available_models) == ["scripted", "scripted-async"]
    reply = await proxy.stub.Execute(pb.ExecuteRequest(user_fragments=["hi"], model_name="echo"))
    assert reply.error.error_code == "MODEL_NOT_FOUND"
