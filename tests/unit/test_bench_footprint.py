"""The bench's memory arithmetic: smaps_rollup parsing, PSS per added worker, and finding the
workers' "listening" lines in a log that earlier runs also wrote to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import footprint, procinfo

ROLLUP = """\
55d1c2a00000-7ffc3b7fe000 ---p 00000000 00:00 0                          [rollup]
Rss:               65700 kB
Pss:               20738 kB
Pss_Dirty:         19000 kB
Shared_Clean:      18800 kB
Shared_Dirty:      35300 kB
Private_Clean:         4 kB
Private_Dirty:     10372 kB
Swap:                  0 kB
"""


def test_smaps_rollup_fields_are_read_in_kib() -> None:
    fields = procinfo.parse_smaps_rollup(ROLLUP)
    assert fields["Rss"] == 65700
    assert fields["Pss"] == 20738
    assert fields["Private_Dirty"] == 10372
    assert "55d1c2a00000-7ffc3b7fe000 ---p 00000000 00" not in fields


def test_this_process_has_uss_within_pss_within_rss() -> None:
    memory = procinfo.memory_kb(os.getpid())
    if not memory:
        pytest.skip("no /proc/<pid>/smaps_rollup here")
    assert 0 < memory["uss"] <= memory["pss"] <= memory["rss"]


def _tree(supervisor_pss: int, *worker_pss: int) -> footprint.TreeMemory:
    return footprint.TreeMemory(
        {"pss": supervisor_pss, "uss": supervisor_pss},
        tuple({"pss": pss, "uss": pss // 2} for pss in worker_pss),
    )


def test_pss_per_added_worker_is_the_growth_of_the_total_per_worker() -> None:
    # Sharing is spread over more processes with four workers: each one's PSS falls, and the
    # supervisor's too, so only the totals say what the two extra workers cost.
    two = _tree(40_000, 30_000, 30_000)
    four = _tree(34_000, 22_000, 22_000, 21_000, 21_000)
    assert footprint.per_added_worker(two, four) == (120_000 - 100_000) / 2
    assert four.mean_worker("uss") == (11_000 + 11_000 + 10_500 + 10_500) / 4
    assert four.max_worker("uss") == 11_000
    assert footprint.per_added_worker(four, two) is None
    assert footprint.per_added_worker(footprint.TreeMemory({}, ()), four) is None


def test_only_lines_written_after_the_offset_count(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("listening on 1\nlistening on 2\n")
    offset = footprint.log_size(log)
    with pytest.raises(RuntimeError, match="only 0 of 1"):
        footprint.wait_for_lines(log, "listening on", 1, after=offset, timeout_s=0)
    with log.open("a") as more:
        more.write("worker 0 started\nlistening on 3\n")
    footprint.wait_for_lines(log, "listening on", 1, after=offset, timeout_s=0)
