"""The client ships to other programs as its own distribution: it may use its generated protocol
code, grpc, protobuf and the standard library (its plugin also llm), never the server's modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "client" / "llm_proxy_client"
PLUGIN = PACKAGE / "llm_plugin.py"
CLIENT_FILES = [*sorted(p for p in PACKAGE.glob("*.py") if p != PLUGIN), PLUGIN]
ALLOWED_PREFIXES = ("llm_proxy_client", "grpc", "google.protobuf", "llm", "pydantic")


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


def test_llm_and_pydantic_are_only_imported_by_the_plugin() -> None:
    for path in CLIENT_FILES[:-1]:
        names = {n.split(".")[0] for n in imported_modules(path)}
        assert not names & {"llm", "pydantic"}, path.name
