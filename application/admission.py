"""Admission control: the configured per-caller request rate, per-caller and server-wide
concurrency.

The limits come with each request (from the policy the request was read with), so a reload
applies at once; the state kept here (buckets, in-flight counts) survives reloads.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from application.ports import Clock
from domain.errors import Overloaded, RateLimited, SubjectOverloaded
from domain.policy import Limits

# Buckets of callers not seen for a while are dropped first; a full bucket is the same as
# no bucket, so forgetting idle callers loses nothing but bounds memory.
MAX_TRACKED_SUBJECTS = 10_000
# How long to suggest waiting when the server is full; streams end at unknown times.
OVERLOADED_RETRY_AFTER_S = 1.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class Admission:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._in_flight = 0
        # Only callers with a request in flight have an entry, so this is bounded by the
        # number of requests in flight.
        self._in_flight_by_subject: dict[str, int] = {}
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def in_flight_of(self, subject: str) -> int:
        return self._in_flight_by_subject.get(subject, 0)

    def enter(self, subject: str, limits: Limits) -> None:
        """Admit one request or raise; every successful enter must be paired with
        leave(subject)."""
        if (
            limits.max_concurrent_requests is not None
            and self._in_flight >= limits.max_concurrent_requests
        ):
            raise Overloaded(
                f"the server is at its limit of {limits.max_concurrent_requests} concurrent "
                "requests; retry shortly",
                OVERLOADED_RETRY_AFTER_S,
            )
        held = self._in_flight_by_subject.get(subject, 0)
        cap = limits.concurrency_cap_per_subject()
        if cap is not None and held >= cap:
            raise SubjectOverloaded(
                f"{subject!r} already has {held} requests in flight, this server's limit per "
                "caller (limits.max_concurrent_per_subject); finish or cancel one, then retry",
                OVERLOADED_RETRY_AFTER_S,
            )
        if limits.max_requests_per_minute is not None:
            self._take_token(subject, limits.max_requests_per_minute)
        self._in_flight += 1
        self._in_flight_by_subject[subject] = held + 1

    def leave(self, subject: str) -> None:
        self._in_flight -= 1
        held = self._in_flight_by_subject.pop(subject) - 1
        if held:
            self._in_flight_by_subject[subject] = held

    def _take_token(self, subject: str, per_minute: int) -> None:
        # A token bucket: bursts up to the per-minute allowance, refilled continuously.
        now = self._clock.monotonic()
        rate = per_minute / 60.0
        bucket = self._buckets.get(subject)
        if bucket is None:
            bucket = _Bucket(tokens=float(per_minute), updated=now)
            self._buckets[subject] = bucket
            if len(self._buckets) > MAX_TRACKED_SUBJECTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(subject)
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            raise RateLimited(
                f"{subject!r} is over this server's limit of {per_minute} requests per minute; "
                f"retry in {wait:.1f}s",
                wait,
            )
        bucket.tokens -= 1.0
