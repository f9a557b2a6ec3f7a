"""The real clock, request ids and server policy behind their application ports."""

from __future__ import annotations

import random
import time
from importlib import metadata
from typing import Generic, TypeVar

from domain.policy import ServerPolicy
from domain.quota import QuotaPolicy, QuotaRule
from domain.usage import ModelPrice
from infrastructure.config.settings import (
    QuotaRuleSettings,
    QuotaSettings,
    Settings,
)

T = TypeVar("T")


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class RandomRequestIds:
    """Random 128-bit ids as 32 hex digits (not UUIDs: no version or variant bits). Ids must
    be unique, not unguessable, so the process's PRNG serves instead of a system call per
    request."""

    def __init__(self) -> None:
        self._random = random.Random()  # noqa: S311 - uniqueness, not secrecy

    def new_request_id(self) -> str:
        return f"{self._random.getrandbits(128):032x}"


def server_version() -> str:
    try:
        return metadata.version("llm-proxy")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def policy_from(settings: Settings, version: str) -> ServerPolicy:
    return ServerPolicy(
        server_name=settings.server.name,
        server_version=version,
        limits=settings.limits,
        prices={
            model: ModelPrice(price.input_per_million, price.output_per_million)
            for model, price in settings.models.prices.items()
        },
        log_prompts=settings.logging.log_prompts,
        quota_rules=quota_policy_from(settings.quotas),
    )


def _rule(pattern: str, rule: QuotaRuleSettings) -> QuotaRule:
    return QuotaRule(
        pattern,
        rule.limits,
        tuple(rule.models.items()),
    )


def quota_policy_from(settings: QuotaSettings) -> QuotaPolicy:
    return QuotaPolicy(
        default=settings.default,
        subjects=tuple(_rule(pattern, rule) for pattern, rule in settings.subjects.items()),
        teams=tuple(_rule(pattern, rule) for pattern, rule in settings.teams.items()),
        estimate_output_tokens=settings.estimate_output_tokens,
        chars_per_token=settings.chars_per_token,
    )


class Reloadable(Generic[T]):
    """Holds the snapshot in force (the policy, a catalog); a reload swaps the whole snapshot
    in one assignment."""

    def __init__(self, snapshot: T) -> None:
        self._snapshot = snapshot

    def current(self) -> T:
        return self._snapshot

    def replace(self, snapshot: T) -> None:
        self._snapshot = snapshot


ReloadablePolicy = Reloadable[ServerPolicy]
