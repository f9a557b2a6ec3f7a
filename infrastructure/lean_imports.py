"""Keeps numpy and pandas out of the server unless something it runs needs them.

llm imports sqlite_utils, and sqlite_utils imports numpy and pandas whenever they are
installed, only to map their scalar types to SQLite column types: storage the proxy never does
through it. With numpy installed (`make bench` installs it for its plot, and images often carry
it for other tools) that alone added about 10 MiB of idle RSS and 30-50 ms of start-up to every
server process. Only sqlite_utils' own first import runs without them: a plugin that needs numpy
imports it as usual, later.
"""

from __future__ import annotations

import importlib
import sys

OPTIONAL_FOR_SQLITE_UTILS = ("numpy", "pandas")


def import_sqlite_utils_without_dataframes() -> None:
    if "sqlite_utils" in sys.modules:
        return
    hidden = [name for name in OPTIONAL_FOR_SQLITE_UTILS if name not in sys.modules]
    for name in hidden:
        # None in sys.modules makes `import name` raise ImportError, which sqlite_utils takes
        # as "not installed".
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        importlib.import_module("sqlite_utils")
    except ImportError:
        # Not installed: llm's own import reports its missing dependency.
        pass
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
