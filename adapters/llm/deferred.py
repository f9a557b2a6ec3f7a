"""SDKs that llm's plugins import when they load but use only inside a model call.

llm's built-in OpenAI plugin imports the openai SDK (17 MiB of memory and a third of a second)
whether or not any OpenAI model is served, and without a key none is. Until something reads an
attribute of it, a stand-in holds the SDK's place in sys.modules; the first read imports the
real SDK, so every plugin still works unchanged. A served model whose code names the SDK has it
imported when the catalog loads instead: its first call then pays nothing, and the workers of
`serve --workers` share the imported SDK with their supervisor.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Any

# Only packages whose importers read them inside functions, never at import or class
# definition: llm's own modules subclass httpx2's classes, so httpx2 cannot be here.
DEFERRABLE = ("openai",)


class DeferredModule(ModuleType):
    """Stands in for a package not imported yet; the first attribute read imports it."""

    def __init__(self, name: str, spec: Any) -> None:
        super().__init__(name)
        # The real spec: code asking importlib.util.find_spec(name) gets a true answer.
        self.__spec__ = spec
        self._deferred_real: ModuleType | None = None
        self._deferred_lock = threading.Lock()

    @property
    def deferred_loaded(self) -> bool:
        return self._deferred_real is not None

    def deferred_load(self) -> ModuleType:
        real = self._deferred_real
        if real is not None:
            return real
        # Model calls run in threads: one imports, the others wait for it rather than seeing a
        # half-initialised package (importlib.util.LazyLoader is not thread-safe before 3.12).
        with self._deferred_lock:
            if self._deferred_real is None:
                name = self.__name__
                if sys.modules.get(name) is self:
                    del sys.modules[name]
                try:
                    self._deferred_real = importlib.import_module(name)
                except BaseException:
                    sys.modules.setdefault(name, self)
                    raise
            return self._deferred_real

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the stand-in lacks, which is all of the package's own.
        if name.startswith("_deferred_"):
            raise AttributeError(name)
        return getattr(self.deferred_load(), name)


def defer(names: Iterable[str] = DEFERRABLE) -> None:
    """Put stand-ins in sys.modules for the packages not imported yet; call before the plugins
    load. Idempotent; a package that is not installed is left alone."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        sys.modules[name] = DeferredModule(name, spec)


def load_used_by(models: Iterable[object]) -> None:
    """Import every deferred package that the code of these model objects names: the modules
    of their classes and base classes (a plugin subclassing llm's OpenAI models counts)."""
    seen: set[str] = set()
    for model in models:
        for cls in type(model).__mro__:
            module_name = cls.__module__
            if module_name in seen:
                continue
            seen.add(module_name)
            module = sys.modules.get(module_name)
            if module is None:
                continue
            for value in list(vars(module).values()):
                if isinstance(value, DeferredModule):
                    value.deferred_load()
