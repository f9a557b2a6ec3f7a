"""The allow-list for the inner layers catches what a deny-list would let through."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_layers", ROOT / "scripts" / "check_layers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_layers = _checker()


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_project_keeps_its_inner_layers_clean() -> None:
    assert check_layers.violations() == []


@pytest.mark.parametrize(
    ("name", "source", "module"),
    [
        ("domain/a.py", "import click\n", "click"),
        ("domain/b.py", "from pydantic_core import core_schema\n", "pydantic_core"),
        ("domain/c.py", "def f():\n    import application.ports\n", "application"),
        ("application/d.py", "import starlette.requests\n", "starlette"),
        ("application/e.py", "from adapters.llm import LlmGateway\n", "adapters"),
        (
            "application/f.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import grpc\n",
            "grpc",
        ),
    ],
)
def test_anything_not_allowed_is_reported(
    tmp_path: Path, name: str, source: str, module: str
) -> None:
    root = _tree(tmp_path, {name: source})
    (problem,) = check_layers.violations(root)
    assert problem.startswith(f"{name}:")
    assert problem.endswith(f"may not import {module!r}")


def test_the_standard_library_and_inner_layers_are_allowed(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "domain/ok.py": "from __future__ import annotations\nimport domain.errors\n",
            "application/ok.py": "import asyncio\nfrom domain.errors import E\nfrom . import z\n",
        },
    )
    assert check_layers.violations(root) == []


def test_the_command_fails_and_names_the_import(tmp_path: Path) -> None:
    # What `make layers` runs: its exit status is what stops `make check`.
    root = _tree(tmp_path, {"domain/bad.py": "import click\n"})
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layers.py"), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr == "domain/bad.py:1: domain/ may not import 'click'\n"
