"""numpy and pandas stay out of the server process unless something it runs imports them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_dataframes(tmp_path: Path) -> Path:
    """Importable stand-ins for numpy and pandas, found before any real ones."""
    # With the names sqlite_utils reads from them when it finds them.
    names = {
        "numpy": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64",
        "pandas": "Timestamp",
    }
    for name, types in names.items():
        package = tmp_path / name
        package.mkdir()
        text = f"STAND_IN = {name!r}\n" + "".join(f"class {each}: pass\n" for each in types.split())
        (package / "__init__.py").write_text(text, encoding="utf-8")
    return tmp_path


def _run(code: str, path: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT)])}
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.split()


def test_the_server_imports_neither_although_both_are_installed(fake_dataframes: Path) -> None:
    code = (
        "import sys, infrastructure.cli, infrastructure.server_runner, llm\n"
        "llm.get_models()\n"
        "print('numpy' in sys.modules, 'pandas' in sys.modules)\n"
        # Whoever needs them later (a plugin) still gets them.
        "import numpy, pandas\n"
        "print(numpy.STAND_IN, pandas.STAND_IN)\n"
    )
    assert _run(code, fake_dataframes) == ["False", "False", "numpy", "pandas"]


def test_without_the_guard_sqlite_utils_would_import_them(fake_dataframes: Path) -> None:
    # What the guard is for: the same stand-ins are imported by llm's import chain alone.
    code = "import sys, llm\nprint('numpy' in sys.modules, 'pandas' in sys.modules)\n"
    assert _run(code, fake_dataframes) == ["True", "True"]


def test_a_numpy_imported_first_is_left_to_sqlite_utils(fake_dataframes: Path) -> None:
    code = (
        "import numpy, infrastructure, sqlite_utils.db as db, sys\n"
        "print(db.np is numpy, 'pandas' in sys.modules)\n"
    )
    assert _run(code, fake_dataframes) == ["True", "False"]
