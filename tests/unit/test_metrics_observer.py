"""PrometheusObserver: what each record counts, and that label values stay bounded."""

from __future__ import annotations

from adapters.metrics import PrometheusObserver
from domain.outcome import Method
from domain.usage import Usage
from tests.unit.fakes import request_record as record


def value(observer: PrometheusObserver, name: str, **labels: str) -> float | None:
    result: float | None = observer.registry.get_sample_value(name, labels)
    return result


def unary_requests(observer: PrometheusObserver, *, model: str, outcome: str) -> float | None:
    labels = {"method": "unary", "transport": "grpc", "model": model, "outcome": outcome}
    return value(observer, "llm_proxy_requests_total", **labels)


def test_in_flight_rises_on_start_and_falls_on_finish() -> None:
    observer = PrometheusObserver(transports=("grpc",))
    observer.request_started(Method.STREAM, "grpc")
    observer.request_started(Method.STREAM, "grpc")
    assert value(observer, "llm_proxy_in_flight_requests", method="stream", transport="grpc") == 2
    observer.request_finished(record(method=Method.STREAM))
    assert value(observer, "llm_proxy_in_flight_requests", method="stream", transport="grpc") == 1
    assert value(observer, "llm_proxy_in_flight_requests", method="unary", transport="grpc") == 0


def test_failures_are_sorted_into_upstream_errors_timeouts_and_cancellations() -> None:
    observer = PrometheusObserver()
    for outcome in ("UPSTREAM_ERROR", "MODEL_UNAVAILABLE", "TIMEOUT", "CANCELLED", "EMPTY_REQUEST"):
        observer.request_started(Method.UNARY, "grpc")
        observer.request_finished(record(outcome=outcome))
    assert value(observer, "llm_proxy_upstream_errors_total", model="echo", code="UPSTREAM_ERROR")
    assert value(
        observer, "llm_proxy_upstream_errors_total", model="echo", code="MODEL_UNAVAILABLE"
    )
    assert value(observer, "llm_proxy_upstream_timeouts_total", model="echo") == 1
    assert value(observer, "llm_proxy_cancellations_total", method="unary", transport="grpc") == 1
    assert unary_requests(observer, model="echo", outcome="EMPTY_REQUEST") == 1


def test_a_request_whose_model_never_resolved_is_counted_without_a_model_name() -> None:
    observer = PrometheusObserver()
    observer.request_started(Method.UNARY, "grpc")
    observer.request_finished(record(model_id=None, outcome="MODEL_NOT_FOUND"))
    assert unary_requests(observer, model="none", outcome="MODEL_NOT_FOUND") == 1


def test_subjects_beyond_the_cap_share_one_label() -> None:
    observer = PrometheusObserver(max_subjects=2)
    for subject in ("a", "b", "c", "d", "a"):
        observer.request_started(Method.UNARY, "grpc")
        observer.request_finished(record(subject=subject, usage=Usage(1, 1), cost_usd=0.5))
    tokens = "llm_proxy_tokens_total"
    assert value(observer, tokens, model="echo", subject="a", direction="input") == 2
    assert value(observer, tokens, model="echo", subject="b", direction="output") == 1
    assert value(observer, tokens, model="echo", subject="other", direction="input") == 2
    assert value(observer, tokens, model="echo", subject="c", direction="input") is None
    assert value(observer, "llm_proxy_cost_usd_total", model="echo", subject="other") == 1.0


def test_stream_records_feed_the_first_chunk_histogram() -> None:
    observer = PrometheusObserver()
    observer.request_started(Method.STREAM, "grpc")
    observer.request_finished(record(method=Method.STREAM, first_chunk_s=0.003, chunks=4))
    assert value(observer, "llm_proxy_time_to_first_chunk_seconds_count", model="echo") == 1
    assert value(observer, "llm_proxy_time_to_first_chunk_seconds_sum", model="echo") == 0.003


def test_two_observers_in_one_process_do_not_collide() -> None:
    first, second = (
        PrometheusObserver(transports=("grpc",)),
        PrometheusObserver(transports=("grpc",)),
    )
    first.request_started(Method.UNARY, "grpc")
    assert value(second, "llm_proxy_in_flight_requests", method="unary", transport="grpc") == 0


def test_no_empty_series_for_unpriced_models_or_unary_first_chunks() -> None:
    observer = PrometheusObserver()
    observer.request_started(Method.UNARY, "grpc")
    observer.request_finished(record(usage=Usage(2, 3), cost_usd=None))
    assert value(observer, "llm_proxy_cost_usd_total", model="echo", subject="alice") is None
    assert value(observer, "llm_proxy_time_to_first_chunk_seconds_count", model="echo") is None
    # A price added by a reload starts the cost series.
    observer.request_started(Method.UNARY, "grpc")
    observer.request_finished(record(usage=Usage(2, 3), cost_usd=0.25))
    assert value(observer, "llm_proxy_cost_usd_total", model="echo", subject="alice") == 0.25


def test_declared_transports_start_at_zero_and_transports_are_counted_apart() -> None:
    observer = PrometheusObserver(transports=("grpc", "http"))
    for method in ("unary", "stream"):
        for transport in ("grpc", "http"):
            assert (
                value(observer, "llm_proxy_in_flight_requests", method=method, transport=transport)
                == 0
            )
    observer.request_started(Method.UNARY, "http")
    observer.request_finished(record(transport="http"))
    observer.request_started(Method.UNARY, "grpc")
    assert (
        value(
            observer,
            "llm_proxy_requests_total",
            method="unary",
            transport="http",
            model="echo",
            outcome="ok",
        )
        == 1
    )
    assert (
        value(
            observer,
            "llm_proxy_requests_total",
            method="unary",
            transport="grpc",
            model="echo",
            outcome="ok",
        )
        is None
    )
    assert value(observer, "llm_proxy_in_flight_requests", method="unary", transport="grpc") == 1
    assert value(observer, "llm_proxy_in_flight_requests", method="unary", transport="http") == 0
