"""Stand-ins for SDKs a plugin imports but no served model uses: a package of this test's own
takes the SDK's part, and counts how often it really ran."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.llm import deferred

PACKAGE = "deferred_sdk_for_tests"
PLUGIN = "deferred_plugin_for_tests"


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An SDK package that records each real import in a file, slowly enough that threads
    asking for it at once overlap, and a plugin that imports it at the top, like llm's OpenAI
    plugin imports openai."""
    package = tmp_path / PACKAGE
    package.mkdir()
    runs = tmp_path / "runs"
    (package / "__init__.py").write_text(
        "import pathlib, time\n"
        f"with open({str(runs)!r}, 'a') as f:\n"
        "    f.write('x')\n"
        "time.sleep(0.05)\n"
        "class Client:\n"
        "    pass\n"
    )
    (package / "types.py").write_text("KIND = 'types'\n")
    (tmp_path / f"{PLUGIN}.py").write_text(
        f"import {PACKAGE}\n\n"
        "class Model:\n"
        "    def client(self):\n"
        f"        return {PACKAGE}.Client()\n"
    )
    (tmp_path / "plain_plugin_for_tests.py").write_text("class Model:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield runs
    for name in list(sys.modules):
        if name.startswith((PACKAGE, PLUGIN, "plain_plugin_for_tests")):
            del sys.modules[name]


def _runs(path: Path) -> int:
    return len(path.read_text()) if path.exists() else 0


def test_a_deferred_package_is_imported_at_its_first_attribute(sdk: Path) -> None:
    deferred.defer([PACKAGE])
    plugin = importlib.import_module(PLUGIN)
    assert _runs(sdk) == 0
    assert isinstance(sys.modules[PACKAGE], deferred.DeferredModule)
    client = plugin.Model().client()
    assert type(client).__name__ == "Client"
    assert _runs(sdk) == 1
    # From now on everyone gets the real package, the stand-in only forwards to it.
    assert not isinstance(sys.modules[PACKAGE], deferred.DeferredModule)
    assert sys.modules[PACKAGE].Client is type(client)
    plugin.Model().client()
    assert _runs(sdk) == 1


def test_imports_of_a_deferred_package_and_its_submodules_still_work(sdk: Path) -> None:
    deferred.defer([PACKAGE])
    names: dict[str, object] = {}
    exec(f"from {PACKAGE} import Client\nimport {PACKAGE}.types as t", names)
    assert isinstance(names["Client"], type)
    assert isinstance(names["t"], types.ModuleType) and names["t"].KIND == "types"
    assert _runs(sdk) == 1
    # What code probing for an optional dependency asks is answered without importing it.
    deferred.defer([PACKAGE])
    assert importlib.util.find_spec(PACKAGE) is not None


def test_threads_reading_it_at_once_import_it_once_and_all_see_it(sdk: Path) -> None:
    deferred.defer([PACKAGE])
    stand_in = sys.modules[PACKAGE]
    start = threading.Barrier(8)
    seen: list[object] = []

    def read() -> None:
        start.wait()
        seen.append(stand_in.Client)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and len(set(map(id, seen))) == 1
    assert _runs(sdk) == 1


def test_a_served_model_whose_code_names_it_has_it_imported_at_load(sdk: Path) -> None:
    deferred.defer([PACKAGE])
    plain = importlib.import_module("plain_plugin_for_tests")
    deferred.load_used_by([plain.Model()])
    assert _runs(sdk) == 0

    base: type = importlib.import_module(PLUGIN).Model
    # A plugin building on another plugin's model class.
    subclassed = type("Subclassed", (base,), {})
    deferred.load_used_by([subclassed()])
    assert _runs(sdk) == 1


def test_packages_already_imported_or_not_installed_are_left_alone(sdk: Path) -> None:
    deferred.defer(["json", "no_such_package_anywhere"])
    assert not isinstance(sys.modules["json"], deferred.DeferredModule)
    assert "no_such_package_anywhere" not in sys.modules


def test_a_package_that_fails_to_import_fails_where_it_is_used(sdk: Path, tmp_path: Path) -> None:
    (tmp_path / PACKAGE / "__init__.py").write_text("raise ImportError('broken SDK')\n")
    deferred.defer([PACKAGE])
    stand_in = sys.modules[PACKAGE]
    with pytest.raises(ImportError, match="broken SDK"):
        _ = stand_in.Client
    # Still deferred: the next use tries again and fails the same way, not with a KeyError.
    assert sys.modules[PACKAGE] is stand_in
    with pytest.raises(ImportError, match="broken SDK"):
        _ = stand_in.Client
