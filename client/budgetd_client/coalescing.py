"""`Coalescing`: how a client gathers concurrent calls into batches on one BatchStream.

    BudgetClient(coalesce=True)                                   # the defaults below
    BudgetClient(coalesce=Coalescing(window_us=500, max_operations=64))

With it, `check`, `reserve`, `commit`, `release` and `consume` calls made at the same
time (from many threads of a `BudgetClient`, or many tasks of an `AsyncBudgetClient`)
travel together, as one BatchStreamRequest on one long-lived BatchStream, and each
caller gets the answer, or the typed exception, its own call would have got. How it
works: `budgetd_client._batching`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The contract's ceiling on server.max_batch_operations: a larger batch is never taken.
MAX_OPERATIONS = 4096


@dataclass(frozen=True, slots=True)
class Coalescing:
    """`window_us`: how long the first call of a batch may wait for others (0: never
    wait; a batch then holds what arrived while the previous ones were on their way).
    A call never waits when no batch is in flight: a lone caller is sent at once.
    `max_operations`: the most operations in one batch (a daemon with a lower
    `server.max_batch_operations` is followed without the callers noticing).
    `max_pending`: the most operations queued or unanswered at once; a caller that
    finds it full waits for room within its own deadline (`timeout_s`)."""

    window_us: int = 200
    max_operations: int = 256
    max_pending: int = 4096

    def __post_init__(self) -> None:
        if not 0 <= self.window_us <= 1_000_000:
            raise ValueError(f"window_us must be 0..1000000, got {self.window_us}")
        if not 1 <= self.max_operations <= MAX_OPERATIONS:
            raise ValueError(
                f"max_operations must be 1..{MAX_OPERATIONS}, got {self.max_operations}"
            )
        if self.max_pending < self.max_operations:
            raise ValueError(
                f"max_pending must be >= max_operations ({self.max_operations}),"
                f" got {self.max_pending}"
            )

    @classmethod
    def of(cls, value: Coalescing | bool | None) -> Coalescing | None:
        """A constructor's `coalesce=` argument: True means the defaults, False/None off."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, Coalescing):
            return value
        raise TypeError(f"coalesce must be a bool or a Coalescing, not {value!r}")


@dataclass(frozen=True, slots=True)
class CoalescingStats:
    """What a client's coalescer did so far (`client.coalescing_stats`): `batches` sent
    on the stream and the `operations` they carried (an operation sent again after a
    broken stream counts again), `streams` opened, operations `queued` for a batch now,
    callers `waiting` for room (`max_pending` reached), and `max_operations`, the bound
    in force (lower than the setting once a daemon refused a batch as too large)."""

    batches: int
    operations: int
    streams: int
    queued: int
    waiting: int
    max_operations: int
