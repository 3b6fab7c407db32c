"""What a ledger counts, as fixed slots of one integer vector.

A ledger keeps its counters as one integer field per slot (`Ledger.count(slot)` reads
one by these constants, `Ledger.counts()` gives the vector): adding a usage record is a
handful of integer additions, with no dict or object per dimension.
Dimensions a cap can limit are slots 0-6 and 11 (wall clock, computed, never counted);
the rest are aggregates that summaries need (cached, cache-write and reasoning tokens,
unpriced requests and tokens, latency).
"""

from __future__ import annotations

from enum import IntEnum


class Dimension(IntEnum):
    """A quantity a policy can cap. Values are slot indices in a ledger's vector."""

    TOTAL_TOKENS = 0
    INPUT_TOKENS = 1
    OUTPUT_TOKENS = 2
    COST_MICRO_USD = 3
    REQUESTS = 4
    # A gauge: open runs holding a slot now. It never resets with a window.
    CONCURRENCY = 5
    # A cap here bounds the wall clock of each run; the slot accumulates finished run time.
    RUN_DURATION_MS = 6
    # Time since the window started: computed from the window, never counted (the slot
    # stays 0). Its value leaves room for the aggregates older states already have.
    WALL_CLOCK_MS = 11


CACHED_INPUT_TOKENS = 7
UNPRICED_REQUESTS = 8
LATENCY_US_SUM = 9
LATENCY_SAMPLES = 10
CACHE_WRITE_INPUT_TOKENS = 12
REASONING_TOKENS = 13
UNPRICED_TOKENS = 14
VECTOR_SIZE = 15
# Vectors of states written before slots 11.. existed (and whose slot 9 summed whole
# milliseconds): `upgraded_vector` brings them to this layout.
LEGACY_VECTOR_SIZE = 11

# Dimensions a reservation holds: what a model call is estimated to spend.
HELD_DIMENSIONS = (
    Dimension.TOTAL_TOKENS,
    Dimension.INPUT_TOKENS,
    Dimension.OUTPUT_TOKENS,
    Dimension.COST_MICRO_USD,
    Dimension.REQUESTS,
)
HELD_SIZE = len(HELD_DIMENSIONS)

# Slots cleared when a window rolls over: everything but the concurrency gauge.
WINDOWED_SLOTS = tuple(i for i in range(VECTOR_SIZE) if i != Dimension.CONCURRENCY)

DIMENSION_NAMES = {d: d.name.lower() for d in Dimension}
DIMENSION_BY_NAME = {name: d for d, name in DIMENSION_NAMES.items()}


def zero_vector() -> list[int]:
    return [0] * VECTOR_SIZE


def upgraded_vector(vector: list[int]) -> list[int]:
    """A stored vector in this layout (a legacy one: latency to microseconds, padded)."""
    if len(vector) == VECTOR_SIZE:
        return list(vector)
    if len(vector) != LEGACY_VECTOR_SIZE:
        raise ValueError(f"a counter vector has {VECTOR_SIZE} slots, got {len(vector)}")
    upgraded = list(vector) + [0] * (VECTOR_SIZE - LEGACY_VECTOR_SIZE)
    upgraded[LATENCY_US_SUM] *= 1000
    return upgraded
