"""What a ledger counts, as fixed slots of one integer vector.

A ledger keeps its counters in a plain `list[int]` indexed by these constants: adding a
usage record is a handful of integer additions, with no dict or object per dimension.
The first seven slots are the dimensions a cap can limit; the rest are aggregates that
summaries need (cached input, unpriced requests, latency).
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


CACHED_INPUT_TOKENS = 7
UNPRICED_REQUESTS = 8
LATENCY_MS_SUM = 9
LATENCY_SAMPLES = 10
VECTOR_SIZE = 11

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
