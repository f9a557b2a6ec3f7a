"""The supervisor's /metrics sums the value files of every worker; a worker that is starting,
or one that died while starting, must not fail the scrape (HTTP 500) for all the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from adapters.metrics import MetricsEndpoint, mark_worker_dead, start_endpoint
from tests.integration.helpers import sample, scrape

KEY = mmap_key("jobs", "jobs_total", [], [], "Jobs done.")


def _count(directory: Path, pid: int, value: float) -> None:
    """What a worker's counter leaves in the directory, written by prometheus_client itself."""
    values = MmapedDict(str(directory / f"counter_{pid}.db"))  # type: ignore[no-untyped-call]
    values.write_value(KEY, value, 0.0)  # type: ignore[no-untyped-call]
    values.close()  # type: ignore[no-untyped-call]


def _being_created(directory: Path, pid: int) -> Path:
    """The state prometheus_client leaves a value file in between creating and sizing it."""
    path = directory / f"counter_{pid}.db"
    path.touch()
    return path


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[MetricsEndpoint]:
    served = start_endpoint("127.0.0.1", 0, multiprocess_dir=str(tmp_path))
    yield served
    served.stop()


def test_a_scrape_while_a_worker_creates_its_value_file_still_answers(
    tmp_path: Path, endpoint: MetricsEndpoint
) -> None:
    _count(tmp_path, 101, 3)
    _being_created(tmp_path, 102)
    assert sample(scrape(endpoint.port), "jobs_total") == 3
    # Once sized and written, the new worker's file counts like any other.
    _count(tmp_path, 102, 2)
    assert sample(scrape(endpoint.port), "jobs_total") == 5


def test_a_worker_killed_while_creating_its_file_leaves_nothing_behind(
    tmp_path: Path, endpoint: MetricsEndpoint
) -> None:
    _count(tmp_path, 101, 3)
    empty = _being_created(tmp_path, 102)
    mark_worker_dead(str(tmp_path), 102)
    assert not empty.exists()
    # A dead worker's counters still count: only its empty file went.
    _count(tmp_path, 103, 4)
    mark_worker_dead(str(tmp_path), 103)
    assert (tmp_path / "counter_103.db").exists()
    assert sample(scrape(endpoint.port), "jobs_total") == 7
