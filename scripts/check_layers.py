"""The inner layers' dependency rule as an allow-list: what domain/ and application/ may import.

import-linter's contracts forbid named packages; a package nobody thought to name (click,
pydantic_core, starlette, ...) would pass them. Here everything is refused except what is
allowed:

- domain/: the standard library and domain itself;
- application/: the standard library, domain and application itself.

Every import counts, wherever it stands (inside functions, under `if TYPE_CHECKING:`).
Run by `make layers` (so by `make check`); prints one line per import that breaks the rule.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
ALLOWED: Mapping[str, frozenset[str]] = {
    "domain": STDLIB | {"domain"},
    "application": STDLIB | {"domain", "application"},
}


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.partition(".")[0]


def violations(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((root / layer).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, module in imported_modules(tree):
                if module not in allowed:
                    where = path.relative_to(root).as_posix()
                    found.append(f"{where}:{line}: {layer}/ may not import {module!r}")
    return found


def main(argv: Sequence[str]) -> int:
    """`check_layers.py [ROOT]`: ROOT defaults to this checkout."""
    problems = violations(Path(argv[0]) if argv else ROOT)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
