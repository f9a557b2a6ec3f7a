"""Operator-set limits and identity, read once per request so a reload applies atomically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, replace
from types import MappingProxyType

from domain.quota import QuotaPolicy
from domain.usage import ModelPrice
from domain.value import value_object

# One caller may hold at most 1/PER_SUBJECT_SHARE of the server-wide concurrency slots unless
# the operator sets its own cap: enough for any one client's parallelism, and the rest stays
# free for everyone else.
PER_SUBJECT_SHARE = 2


@value_object
class Limits:
    max_input_length: int | None = 1_000_000
    request_timeout_seconds: float = 300.0
    max_concurrent_requests: int | None = None
    # None: a share of max_concurrent_requests (PER_SUBJECT_SHARE), so that one caller cannot
    # take every slot; no cap at all when the server-wide limit is off too.
    max_concurrent_per_subject: int | None = None
    max_requests_per_minute: int | None = None
    max_attachments: int = 16
    # Over all attachments of one request; it must also fit server.max_message_bytes.
    max_attachment_bytes: int = 10 * 1024 * 1024
    # Off by default: a URL makes the model's plugin fetch it from inside this network (SSRF).
    allow_attachment_urls: bool = False
    # A stream whose client accepts nothing for this long is cancelled: its slot freed, its
    # model stopped, its buffered answer dropped.
    client_read_timeout_seconds: float = 30.0

    def concurrency_cap_per_subject(self) -> int | None:
        if self.max_concurrent_per_subject is not None:
            return self.max_concurrent_per_subject
        if self.max_concurrent_requests is None:
            return None
        return max(1, self.max_concurrent_requests // PER_SUBJECT_SHARE)


@value_object
class ServerPolicy:
    server_name: str
    server_version: str
    limits: Limits = Limits()
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    # Whether request records carry prompt and answer text (an operator's audit choice).
    log_prompts: bool = False
    # Per-subject and per-team quotas and budgets, as configured.
    quota_rules: QuotaPolicy = QuotaPolicy()
    # What admission enforces: quota_rules with the limits.* request rate and concurrency
    # settings folded in as the server-wide and default per-caller limits.
    quotas: QuotaPolicy = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))
        limits = self.limits
        rules = self.quota_rules
        default = replace(
            rules.default,
            requests_per_minute=rules.default.requests_per_minute
            if rules.default.requests_per_minute is not None
            else limits.max_requests_per_minute,
            concurrent=rules.default.concurrent
            if rules.default.concurrent is not None
            else limits.concurrency_cap_per_subject(),
        )
        server = rules.server_concurrent
        if server is None:
            server = limits.max_concurrent_requests
        object.__setattr__(
            self, "quotas", replace(rules, default=default, server_concurrent=server)
        )

    def price_for(self, model_id: str) -> ModelPrice | None:
        return self.prices.get(model_id)
