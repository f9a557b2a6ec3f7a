"""What a `serve --workers` supervisor imports before forking, beyond what every server
imports: the optional adapters its configuration turns on.

Each of them is otherwise imported by its builder when a worker starts (see observability.py,
quotas.py, ledger.py, http_api.py); imported once here, the workers share those pages instead
of each holding its own copy. Missing one here costs memory, never correctness.
"""

from __future__ import annotations

import importlib

from infrastructure.config.settings import Settings


def configured_modules(settings: Settings) -> list[str]:
    modules: list[str] = []
    if settings.http.enabled:
        modules.append("adapters.http")
    if settings.metrics.enabled:
        modules.append("adapters.metrics")
    if settings.tracing.enabled:
        modules.append("adapters.tracing")
    if settings.quotas.store == "redis":
        modules.append("adapters.quota.redis")
    else:
        # Workers keep their quota counters in the supervisor, through this client.
        modules.append("adapters.quota.shared")
    if settings.ledger.backend == "postgres":
        modules.append("adapters.ledger.postgres")
    return modules


def import_configured(settings: Settings) -> None:
    for module in configured_modules(settings):
        importlib.import_module(module)
