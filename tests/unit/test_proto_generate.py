"""`make proto-check` is quiet when the generated code is fresh: CI logs show only problems."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.commands import run_sync

ROOT = Path(__file__).resolve().parents[2]


def test_check_of_fresh_code_prints_nothing() -> None:
    result = run_sync(sys.executable, "proto/generate.py", "--check", timeout=120)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
