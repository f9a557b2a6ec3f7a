"""Applying a new configuration to a running server without a restart.

A reload is two-phase: every reloadable first *prepares* (validates and builds whatever it will
need, raising on any problem) and only when all have prepared does each *commit* (a swap that
cannot fail). So an invalid configuration changes nothing: the reason is logged and the old
configuration stays in force. Open streams keep the snapshots they started with.

To make something else reloadable (JWT keys, for example), implement `Reloadable` and append
an instance to `Container.reloadables`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from adapters.llm import LlmModelRegistry
from infrastructure.config.loader import ConfigError
from infrastructure.config.settings import Settings
from infrastructure.runtime import ReloadablePolicy, policy_from

log = logging.getLogger("llm_proxy.reload")

Commit = Callable[[], None]
SettingsLoader = Callable[[], Settings]

# Settings read only at start-up; a change is reported and waits for a restart.
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "server": (
        "host",
        "port",
        "name",
        "min_ping_interval_seconds",
        "max_message_bytes",
        "max_connection_idle_seconds",
        "max_connection_age_seconds",
        "max_connection_age_grace_seconds",
        "max_concurrent_streams",
        "health",
        "reflection",
        "workers",
    ),
    "models": ("plugin_modules", "max_threads"),
    "logging": ("format",),
    "metrics": ("enabled", "host", "port", "max_subjects", "allow_public"),
    "tracing": ("enabled", "service_name", "exporter", "otlp_endpoint", "sample_ratio"),
    # Rules, defaults and estimates reload; where the counters and rows live does not.
    "quotas": (
        "store",
        "redis_url",
        "redis_key_prefix",
        "redis_timeout_seconds",
        "on_store_error",
    ),
    "ledger": (
        "backend",
        "path",
        "postgres_dsn",
        "batch_size",
        "flush_interval_seconds",
        "max_queue",
        "max_attempts",
        "close_timeout_seconds",
    ),
}


class Reloadable(Protocol):
    def prepare(self, settings: Settings) -> Commit:
        """Check `settings` and get ready to apply them; raise to reject the whole reload."""
        ...


class ReloadRejected(Exception):
    """A new configuration was not applied; the old one is still in force."""


class CatalogReload:
    """Served models, aliases and the default model."""

    def __init__(self, registry: LlmModelRegistry) -> None:
        self._registry = registry

    def prepare(self, settings: Settings) -> Commit:
        models = settings.models
        return self._registry.prepare_reconfigure(
            serve=models.serve, aliases=models.aliases, default_model=models.default
        )


class PolicyReload:
    """Limits, prices, the server's name and whether prompts are logged."""

    def __init__(self, policy: ReloadablePolicy, version: str) -> None:
        self._policy = policy
        self._version = version

    def prepare(self, settings: Settings) -> Commit:
        new = policy_from(settings, self._version)
        return lambda: self._policy.replace(new)


class LogLevelReload:
    def prepare(self, settings: Settings) -> Commit:
        level = settings.logging.level
        return lambda: logging.getLogger().setLevel(level)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    changed: list[str] = []
    for section, keys in RESTART_ONLY.items():
        before, after = getattr(old, section), getattr(new, section)
        changed.extend(
            f"{section}.{key}" for key in keys if getattr(before, key) != getattr(after, key)
        )
    return changed


class Reloader:
    def __init__(
        self,
        load: SettingsLoader | None,
        current: Settings,
        reloadables: Sequence[Reloadable],
    ) -> None:
        self._load = load
        self.current = current
        self._reloadables = tuple(reloadables)
        self._lock = asyncio.Lock()
        self.reloads = 0

    def reload(self) -> Settings:
        """Re-read, re-validate and apply the configuration; raise ReloadRejected if invalid."""
        if self._load is None:
            raise ReloadRejected("this server was not started from a configuration it can re-read")
        try:
            new = self._load()
            commits = [reloadable.prepare(new) for reloadable in self._reloadables]
        except ConfigError as exc:
            raise ReloadRejected(str(exc)) from exc
        except Exception as exc:  # any reloadable may reject, each in its own terms
            raise ReloadRejected(f"invalid configuration: {exc}") from exc
        for commit in commits:
            commit()
        for key in restart_only_changes(self.current, new):
            log.warning("%s changed; it takes effect only after a restart", key)
        # Restart-only values stay as started, so the next reload reports them again.
        self.current = _keep_restart_only(self.current, new)
        self.reloads += 1
        return new

    async def reload_logged(self, reason: str) -> bool:
        """reload(), one at a time, with the outcome logged; True when the new config applies."""
        async with self._lock:
            try:
                self.reload()
            except ReloadRejected as exc:
                log.error(
                    "configuration reload (%s) rejected; the previous one stays: %s", reason, exc
                )
                return False
            log.info("configuration reloaded (%s)", reason)
            return True


def _keep_restart_only(old: Settings, new: Settings) -> Settings:
    sections = {}
    for section, keys in RESTART_ONLY.items():
        kept = {key: getattr(getattr(old, section), key) for key in keys}
        sections[section] = dataclasses.replace(getattr(new, section), **kept)
    return dataclasses.replace(new, **sections)


class FileWatcher:
    """Polls a file's identity and modification time; Kubernetes replaces a mounted ConfigMap
    by swapping a symlink, which stat() through the link notices too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen or stamp is None:
            return False
        self._seen = stamp
        return True


async def watch(watcher: FileWatcher, interval_s: float, reloader: Reloader) -> None:
    while True:
        await asyncio.sleep(interval_s)
        if watcher.changed():
            await reloader.reload_logged(f"{watcher.path} changed")
