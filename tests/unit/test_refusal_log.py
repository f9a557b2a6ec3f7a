"""The refusal log: the first refusal of each kind per interval as it happens, the rest summed
up once per interval, with a bounded number of kinds."""

from __future__ import annotations

import logging

import pytest

from infrastructure.refusal_log import MAX_KINDS, RefusalLog, peer_host


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "llm_proxy.refusals"]


def test_the_first_of_each_kind_is_logged_and_the_rest_summed_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = RefusalLog(interval_s=10, clock=clock)
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            refusals.call_refused("unauthenticated", "ipv4:10.0.0.7:40000", "missing credentials")
        for port in range(5):
            refusals.call_refused("malformed_request", f"ipv4:10.0.0.8:{port}", "bad body")
        assert len(_lines(caplog)) == 2
        clock.now += 10
        refusals.call_refused("unauthenticated", "ipv4:10.0.0.7:40001", "missing credentials")

    lines = _lines(caplog)
    assert lines[0] == ("refused a call (unauthenticated) from ipv4:10.0.0.7: missing credentials")
    assert lines[2] == (
        "53 more refused calls in the last 10s: unauthenticated from ipv4:10.0.0.7: 49, "
        "malformed_request from ipv4:10.0.0.8: 4"
    )
    # A new interval logs the first of a kind again.
    assert lines[3].startswith("refused a call (unauthenticated)")


def test_flush_with_nothing_repeated_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(clock=Clock())
    with caplog.at_level(logging.INFO):
        refusals.call_refused("unauthenticated", "ipv4:10.0.0.7:1", "x")
        refusals.flush()
    assert len(_lines(caplog)) == 1


def test_kinds_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(clock=Clock())
    with caplog.at_level(logging.INFO):
        for index in range(MAX_KINDS + 50):
            refusals.call_refused(
                "unauthenticated", f"ipv4:10.0.{index // 250}.{index % 250}:1", "x"
            )
        refusals.flush()
    lines = _lines(caplog)
    assert len(lines) == MAX_KINDS + 1
    assert lines[-1].endswith("unauthenticated from other peers: 50")


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:5000", "ipv6:[::1]"),
        ("unix:/run/proxy.sock", "unix:/run/proxy.sock"),
        ("", ""),
    ],
)
def test_a_peer_is_named_by_its_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host
