"""Reloader: all reloadables prepare before any commits; restart-only keys are reported."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from infrastructure.config import ConfigError, Settings
from infrastructure.config.settings import (
    LimitsSettings,
    QuotaLimitSettings,
    QuotaRuleSettings,
    QuotaSettings,
    ServerSettings,
)
from infrastructure.reload import (
    FileWatcher,
    PolicyReload,
    Reloader,
    ReloadRejected,
    restart_only_changes,
)
from infrastructure.runtime import ReloadablePolicy, policy_from


class Recording:
    def __init__(self, fail: bool = False, events: list[str] | None = None, name: str = "") -> None:
        self.fail = fail
        self.name = name
        # Shared between reloadables, to see in which order the reloader called them.
        self.events = events if events is not None else []
        self.prepared: list[Settings] = []
        self.committed: list[Settings] = []

    def prepare(self, settings: Settings) -> Callable[[], None]:
        self.events.append(f"prepare {self.name}")
        self.prepared.append(settings)
        if self.fail:
            raise ValueError("models.aliases.fast: no such model")

        def commit() -> None:
            self.events.append(f"commit {self.name}")
            self.committed.append(settings)

        return commit


def with_timeout(seconds: float) -> Settings:
    return Settings(limits=LimitsSettings(request_timeout_seconds=seconds))


def test_every_reloadable_commits_after_all_prepared() -> None:
    events: list[str] = []
    first, second = Recording(events=events, name="a"), Recording(events=events, name="b")
    new = with_timeout(5)
    reloader = Reloader(lambda: new, Settings(), [first, second])
    reloader.reload()
    assert events[:2] == ["prepare a", "prepare b"]
    assert sorted(events[2:]) == ["commit a", "commit b"]
    assert first.committed == [new] and second.committed == [new]
    assert reloader.current.limits.request_timeout_seconds == 5


def test_one_rejection_means_nothing_is_applied() -> None:
    good, bad = Recording(), Recording(fail=True)
    old = Settings()
    reloader = Reloader(lambda: with_timeout(5), old, [good, bad])
    with pytest.raises(ReloadRejected, match="no such model"):
        reloader.reload()
    assert good.prepared and not good.committed
    assert reloader.current is old


def test_an_invalid_file_is_rejected_with_its_reason() -> None:
    def load() -> Settings:
        raise ConfigError(["limits.request_timeout_seconds: must be positive (got -1)"])

    reloader = Reloader(load, Settings(), [Recording()])
    with pytest.raises(ReloadRejected, match="request_timeout_seconds"):
        reloader.reload()


def test_without_a_source_a_reload_is_refused() -> None:
    with pytest.raises(ReloadRejected, match="configuration it can re-read"):
        Reloader(None, Settings(), []).reload()


def test_restart_only_keys_are_reported_and_kept_as_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = Settings()
    new = dataclasses.replace(
        with_timeout(7), server=ServerSettings(port=6000, grace_period_seconds=3)
    )
    assert restart_only_changes(old, new) == ["server.port"]
    reloader = Reloader(lambda: new, old, [])
    with caplog.at_level(logging.WARNING):
        reloader.reload()
    assert "server.port changed" in caplog.text
    # The port in force is still the one the server bound; reloadable keys moved on.
    assert reloader.current.server.port == old.server.port
    assert reloader.current.server.grace_period_seconds == 3
    assert reloader.current.limits.request_timeout_seconds == 7


async def test_reload_logged_reports_rejection_and_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reloader = Reloader(lambda: Settings(), Settings(), [Recording(fail=True)])
    with caplog.at_level(logging.INFO):
        assert await reloader.reload_logged("SIGHUP") is False
    assert "rejected" in caplog.text and "no such model" in caplog.text


def test_file_watcher_notices_a_rewrite_and_a_replacement(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text("a: 1\n")
    watcher = FileWatcher(path)
    assert not watcher.changed()
    path.write_text("a: 22\n")
    assert watcher.changed()
    assert not watcher.changed()
    replacement = tmp_path / "new.yaml"
    replacement.write_text("a: 333\n")
    replacement.replace(path)
    assert watcher.changed()


def test_quota_rules_reload_but_where_counters_live_does_not() -> None:
    old = Settings()
    rules = QuotaSettings(
        store="redis",
        redis_url="redis://127.0.0.1:1/0",
        teams={"red": QuotaRuleSettings(limits=QuotaLimitSettings(usd_per_day=5.0))},
    )
    new = dataclasses.replace(old, quotas=rules)
    assert restart_only_changes(old, new) == ["quotas.store", "quotas.redis_url"]
    policy = ReloadablePolicy(policy_from(old, "1"))
    reloader = Reloader(lambda: new, old, [PolicyReload(policy, "1")])
    reloader.reload()
    (team_rule,) = policy.current().quotas.teams
    assert (team_rule.pattern, team_rule.limits.usd_per_day) == ("red", 5.0)
    assert reloader.current.quotas.store == "memory"
