"""When to retry a call and how long to wait: pure policy, no I/O.

Every unary call of budgetd is safe to retry: reads change nothing, Heartbeat is
idempotent by nature, and each mutation carries one `request_id` that the SDK reuses on
every attempt, so the server answers a repeat with its stored answer (`replayed`) and
counts nothing twice. So UNAVAILABLE (daemon starting, draining or gone) and
DEADLINE_EXCEEDED (the answer may have been lost) are retried for every call; any other
status is an answer and is raised at once: UNAUTHENTICATED and PERMISSION_DENIED above
all (the same credentials get the same refusal; retrying would only hammer the daemon's
gate and hide a configuration mistake behind the backoff).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Refusals of the caller itself: never retried, resubscribed or failed open.
NOT_ALLOWED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
# A Subscribe stream that breaks with these is resumed from the last seq received:
# UNAVAILABLE (daemon restarting) and RESOURCE_EXHAUSTED (cut off for being too slow, or
# too many subscribers right now).
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
assert not NOT_ALLOWED & (RETRYABLE | RESUMABLE), "a refusal of the caller is final"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, capped: the n-th wait (from 0) is a random value
    in [0.5, 1] * min(max_s, initial_s * multiplier**n). The jitter keeps agents that lost
    the daemon together from hammering it together when it comes back; the lower half
    bound keeps every wait long enough to be worth it."""

    initial_s: float = 0.05
    max_s: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {self}")
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier}")

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return ceiling * random.uniform(0.5, 1.0)

    def delays(self, retries: int) -> Iterator[float]:
        """The waits before each of `retries` retries."""
        return (self.delay(n) for n in range(retries))
