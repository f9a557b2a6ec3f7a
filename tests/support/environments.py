"""Fresh virtual environments for packaging tests, offline.

A fresh venv has only the standard library. The distributions a test allows it (grpcio and
protobuf for the client; llm and pip for `llm install`) are lent from this test run's own
environment: each of their installed files is symlinked into a folder that the fresh venv puts on
its path, so nothing is downloaded and nothing else of this environment (the server's packages,
other plugins) is visible there.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(names: Iterable[str]) -> set[str]:
    """The distributions `names` need at run time (extras not requested are left out)."""
    environment = {key: str(value) for key, value in default_environment().items()}
    seen: set[str] = set()
    pending = [Requirement(name) for name in names]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for spec in md.requires(name) or ():
            needed = Requirement(spec)
            # Each requested extra, or none, can make the marker true.
            extras = [*requirement.extras, ""]
            if needed.marker is None or any(
                needed.marker.evaluate(environment | {"extra": extra}) for extra in extras
            ):
                pending.append(needed)
    return seen


def lend(names: Iterable[str], into: Path) -> None:
    """Symlink every installed file of `names` (and what they need) under `into`."""
    for name in sorted(closure(names)):
        dist = md.distribution(name)
        for file in dist.files or ():
            parts = Path(file).parts
            if parts[0] == ".." or "__pycache__" in parts:
                continue  # console scripts outside site-packages; caches
            source = Path(str(dist.locate_file(file)))
            if not source.exists():
                continue
            target = into / file
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(source)


def fresh_venv(path: Path, *, lent: Iterable[str] = ()) -> Path:
    """A venv without pip or anything else, seeing only the `lent` distributions; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    names = list(lent)
    if names:
        shelf = path / "lent"
        lend(names, shelf)
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        (Path(purelib) / "lent.pth").write_text(f"{shelf}\n")
    return python


def pip(python: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run this environment's pip against another interpreter, offline and without user config."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *args],
        env={**offline_pip_env(), **(env or {})},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def offline_pip_env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return base | {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
