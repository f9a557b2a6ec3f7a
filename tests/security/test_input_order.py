"""A caller over its rate limit is told that, whatever else is wrong (issue 10, item 7).

Before the fix content checks ran before admission: a caller already over its requests per
minute got 50 of 50 INTERNAL errors for hostile schemas, and every refused request made the
server parse what it sent. Now the limit comes right after the checks that cost nothing, so
such a caller gets RESOURCE_EXHAUSTED with a retry-after, and refused requests spend its
allowance like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import grpc
import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.security.served import SCRIPTED_PLUGIN, Served, serve

CONFIG = (
    "server:\n  port: 0\n  grace_period_seconds: 1\n"
    f"models:\n  plugin_modules: [{SCRIPTED_PLUGIN}]\n"
    "auth:\n  enabled: false\n"
    "limits:\n  max_requests_per_minute: 2\n"
)

COSTLY = [
    ("unknown model", pb.ExecuteRequest(user_fragments=["hi"], model_name="no-such-model")),
    (
        "schema nested 1,000 deep",
        pb.ExecuteRequest(
            user_fragments=["hi"], model_name="echo", response_model_schema="[" * 1000 + "]" * 1000
        ),
    ),
    (
        "schema that is not JSON",
        pb.ExecuteRequest(user_fragments=["hi"], model_name="echo", response_model_schema="{"),
    ),
    (
        "integer of 5,000 digits",
        pb.ExecuteRequest(
            user_fragments=["hi"],
            model_name="echo",
            response_model_schema='{"type": "object", "maxLength": ' + "9" * 5000 + "}",
        ),
    ),
]


@pytest.fixture(scope="module")
def over_its_limit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(CONFIG, tmp_path_factory.mktemp("order")) as served:
        with grpc.insecure_channel(served.address) as channel:
            stub = pb_grpc.VibectlLLMProxyStub(channel)
            # Two refused requests spend the whole allowance of two per minute.
            for _, message in COSTLY[:2]:
                reply = stub.Execute(message, timeout=30)
                assert reply.HasField("error")
        yield served


def _call(stub: pb_grpc.VibectlLLMProxyStub, method: str, message: pb.ExecuteRequest) -> None:
    if method == "Execute":
        stub.Execute(message, timeout=30)
    else:
        list(stub.StreamExecute(message, timeout=30))


@pytest.mark.parametrize("method", ["Execute", "StreamExecute"])
@pytest.mark.parametrize(("case", "message"), COSTLY)
def test_a_caller_over_its_limit_hears_only_that(
    over_its_limit: Served, method: str, case: str, message: pb.ExecuteRequest
) -> None:
    with grpc.insecure_channel(over_its_limit.address) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            _call(stub, method, message)
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "requests per minute" in (error.details() or "")
    trailers = cast("list[tuple[str, str]]", list(error.trailing_metadata() or ()))
    assert [key for key, _ in trailers].count("retry-after") == 1
    assert "Traceback" not in over_its_limit.log
