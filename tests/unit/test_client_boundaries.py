"""The client ships to other programs: it may use the generated protocol code, grpc and the
standard library, never the server's own modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT_FILES = [
    *sorted((ROOT / "adapters/grpc/client").glob("*.py")),
    ROOT / "adapters/grpc/llm_plugin.py",
]
ALLOWED_PREFIXES = ("adapters.grpc.client", "adapters.grpc.generated", "grpc", "llm")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", CLIENT_FILES, ids=lambda p: p.name)
def test_client_imports_only_protocol_code_grpc_and_stdlib(path: Path) -> None:
    foreign = {
        name
        for name in imported_modules(path)
        if name.split(".")[0] not in sys.stdlib_module_names
        and not any(name == p or name.startswith(p + ".") for p in ALLOWED_PREFIXES)
    }
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


def test_llm_is_only_imported_by_the_plugin() -> None:
    for path in CLIENT_FILES[:-1]:
        assert not any(n.split(".")[0] == "llm" for n in imported_modules(path)), path.name
