"""Identifiers a client chooses, against `serve` as an operator runs it (issue 10, items 4, 8).

request_id and model_name end up in the text log, in metrics and in replies. Before the fix a
request_id with a newline forged whole log lines (a fake WARNING), one with ESC sent terminal
escapes, and a megabyte of model_name came back as a megabyte of error. Now both are refused
with INVALID_ARGUMENT when longer than 256 characters or not printable, and the refusal never
repeats them.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from llm_proxy_client.generated import llm_proxy_pb2 as pb
from llm_proxy_client.generated import llm_proxy_pb2_grpc as pb_grpc
from tests.security.served import SCRIPTED_PLUGIN, Served, serve

FORGED = "2026-01-01 00:00:00,000 WARNING llm_proxy.auth: forged by a client"
CONFIG = (
    "server:\n  port: 0\n  grace_period_seconds: 1\n  max_message_bytes: 20000000\n"
    f"models:\n  plugin_modules: [{SCRIPTED_PLUGIN}]\n"
    "auth:\n  enabled: false\n"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(CONFIG, tmp_path_factory.mktemp("identifiers")) as running:
        yield running


def call(served: Served, method: str, message: pb.ExecuteRequest) -> grpc.RpcError | None:
    with grpc.insecure_channel(
        served.address, options=[("grpc.max_receive_message_length", 20_000_000)]
    ) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        try:
            if method == "Execute":
                stub.Execute(message, timeout=30)
            else:
                list(stub.StreamExecute(message, timeout=30))
        except grpc.RpcError as error:
            return error
    return None


def refused(served: Served, method: str, message: pb.ExecuteRequest) -> str:
    """The details of the INVALID_ARGUMENT the call must end with."""
    error = call(served, method, message)
    assert error is not None, "accepted"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    details: str = error.details() or ""
    return details


BAD_REQUEST_IDS = [
    ("newline", f"ok\n{FORGED}"),
    ("carriage return", f"ok\r{FORGED}"),
    ("escape", "ok\x1b[2J\x1b[31mred"),
    ("nul", "ok\x00"),
    ("delete", "ok\x7f"),
    ("line separator", f"ok\u2028{FORGED}"),
    ("bidi override", "ok\u202egnp.exe"),
]


@pytest.mark.parametrize("method", ["Execute", "StreamExecute"])
@pytest.mark.parametrize(("case", "request_id"), BAD_REQUEST_IDS)
def test_request_ids_with_control_characters_are_refused(
    served: Served, method: str, case: str, request_id: str
) -> None:
    details = refused(
        served, method, pb.ExecuteRequest(user_fragments=["hi"], request_id=request_id)
    )
    assert "request_id contains a control or other non-printable character" in details
    assert "U+" in details
    assert request_id not in details
    assert "forged" not in details


def test_no_client_value_forges_or_colours_a_log_line(served: Served) -> None:
    for _, request_id in BAD_REQUEST_IDS:
        call(served, "Execute", pb.ExecuteRequest(user_fragments=["hi"], request_id=request_id))
    log = served.wait_for(lambda log: log.count("outcome=INVALID_ARGUMENT") >= 7)
    assert not any(line.startswith(FORGED) for line in log.splitlines())
    assert "forged by a client" not in log
    assert "\x1b" not in log
    assert "\u2028" not in log
    assert " ERROR " not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("method", ["Execute", "StreamExecute"])
@pytest.mark.parametrize("field", ["request_id", "model_name"])
def test_identifiers_over_256_characters_are_refused_without_being_repeated(
    served: Served, method: str, field: str
) -> None:
    message = pb.ExecuteRequest(user_fragments=["hi"])
    setattr(message, field, "m" * 257)
    details = refused(served, method, message)
    assert details == f"{field} is 257 characters; at most 256 are accepted"


@pytest.mark.parametrize("method", ["Execute", "StreamExecute"])
def test_a_huge_model_name_gets_a_short_answer(served: Served, method: str) -> None:
    # 8 MiB: before the fix it came back whole in the error (and at 16 MiB broke the reply).
    details = refused(
        served, method, pb.ExecuteRequest(user_fragments=["hi"], model_name="m" * (8 << 20))
    )
    assert len(details) < 100
    assert "Traceback" not in served.log


def test_a_model_name_with_a_newline_is_refused(served: Served) -> None:
    details = refused(
        served, "Execute", pb.ExecuteRequest(user_fragments=["hi"], model_name=f"echo\n{FORGED}")
    )
    assert details.startswith("model_name contains a control")
    assert FORGED not in details


def test_printable_identifiers_up_to_the_limit_still_work(served: Served) -> None:
    with grpc.insecure_channel(served.address) as channel:
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        rid = "r" * 256
        reply = stub.Execute(
            pb.ExecuteRequest(user_fragments=["hi"], model_name="echo", request_id=rid),
            timeout=30,
        )
        assert reply.request_id == rid
        assert reply.HasField("success")
        unknown = stub.Execute(
            pb.ExecuteRequest(user_fragments=["hi"], model_name="n" * 256), timeout=30
        )
        assert unknown.error.error_code == "MODEL_NOT_FOUND"
