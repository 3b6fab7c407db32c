"""What the hot path adds to: plain counters and histogram buckets, one per attribute set.

The OpenTelemetry SDK's synchronous instruments cost ~20 µs per `add` or `record` here
(attribute cleaning and hashing on every call), several times what a Consume itself
costs. So the hot path adds integers to these small objects, whose attribute dicts are
built once when a series is first seen; the exporters read them at collection time
(`budgetd.telemetry.instruments`). Reads happen on the exporter's thread while the event
loop adds: each read copies under the GIL, so a point may lag the newest call by one (a
histogram's sum may already hold a value its counts do not yet show).

Every map of series is capped (`max_series`): past it, new attribute sets fold into one
series marked `otel.metric.overflow = true` (the OpenTelemetry rule), so totals stay
exact and the series count stays flat whatever callers send.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

from budgetd.logs import fields

log = logging.getLogger("budgetd.telemetry")

Attributes = dict[str, str | int | float | bool]
OVERFLOW: Attributes = {"otel.metric.overflow": True}
# Keys left out (folded into the overflow series, ledgers not exported) remembered so
# each is counted once; past this many the count is a lower bound.
MAX_LEFT_OUT = 10_000
S = TypeVar("S")

# GenAI semantic conventions: `gen_ai.client.token.usage` bucket boundaries.
TOKEN_BOUNDS = (
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
    1048576.0, 4194304.0, 16777216.0, 67108864.0,
)  # fmt: skip
# Seconds: budgetd answers in well under a millisecond, so the low end is fine-grained.
SECONDS_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
RECORDS_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


class Buckets:
    """An explicit-bucket histogram: bucket i counts values in (bounds[i-1], bounds[i]]."""

    __slots__ = ("bounds", "counts", "high", "low", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total: float = 0
        self.low = float("inf")
        self.high = float("-inf")

    def record(self, value: float) -> None:
        # Min and max before the count: a reader that sees the count sees them set.
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.total += value
        self.counts[bisect_left(self.bounds, value)] += 1

    def read(self) -> tuple[list[int], float, float, float]:
        """(bucket counts, sum, min, max), copied: the count is sum(bucket counts)."""
        return list(self.counts), self.total, self.low, self.high


class SeriesMap(Generic[S]):
    """Series by key, each made once by `make(attributes)`; at most `cap` of them, then
    one overflow series for every new key."""

    __slots__ = ("_folded", "_make", "_overflow", "_series", "cap", "name")

    def __init__(self, name: str, cap: int, make: Callable[[Attributes], S]) -> None:
        self.name = name
        self.cap = cap
        self._make = make
        self._series: dict[Hashable, S] = {}
        self._overflow: S | None = None
        self._folded: set[int] = set()  # hashes of keys folded in, at most MAX_LEFT_OUT

    @property
    def overflowed(self) -> int:
        """Distinct attribute sets folded into the overflow series (at least)."""
        return len(self._folded)

    def get(self, key: Hashable, attributes: Callable[[], Attributes]) -> S:
        series = self._series.get(key)
        if series is None:
            series = self.add(key, attributes)
        return series

    def find(self, key: Hashable) -> S | None:
        """The series of `key` if it has one (the hot path's lookup: no closure made)."""
        return self._series.get(key)

    def add(self, key: Hashable, attributes: Callable[[], Attributes]) -> S:
        """A new series for `key` (or the overflow series past the cap)."""
        if len(self._series) >= self.cap:
            if len(self._folded) < MAX_LEFT_OUT:
                self._folded.add(hash(key))  # not the key: it may hold long label values
            if self._overflow is None:
                log.warning(
                    "metric series cap reached: new attribute sets fold into one overflow "
                    "series (otel.metric.overflow=true)",
                    extra=fields(metric=self.name, max_series=self.cap),
                )
                self._overflow = self._make(OVERFLOW)
            return self._overflow
        made = attributes()
        series = self._series[key] = self._make(made)
        return series

    def items(self) -> list[S]:
        """Every series (a copy: safe to iterate while the loop adds more)."""
        found = list(self._series.values())
        if self._overflow is not None:
            found.append(self._overflow)
        return found

    def __len__(self) -> int:
        return len(self._series) + (self._overflow is not None)


class Count:
    """A counter series: one integer, its attributes bound once."""

    __slots__ = ("attributes", "value")

    def __init__(self, attributes: Attributes) -> None:
        self.attributes = attributes
        self.value = 0


class Timing:
    """A histogram series of seconds (RPC durations, fsyncs, snapshots)."""

    __slots__ = ("attributes", "buckets")

    def __init__(self, attributes: Attributes, bounds: Sequence[float] = SECONDS_BOUNDS) -> None:
        self.attributes = attributes
        self.buckets = Buckets(bounds)
