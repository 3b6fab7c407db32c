"""A fixed-size latency histogram: log-linear buckets at most 1.6 % wide, 1 ns .. 73 min.

The load generator records every call of a measured window; a list of samples would
grow with the window and the rate, this stays at a few thousand counters. Each power of
two is split into SUB_BUCKETS linear buckets, so a percentile read back is within one
bucket's width (1/64 of its power of two) of the true value.
"""

from __future__ import annotations

SUB_BITS = 6
SUB_BUCKETS = 1 << SUB_BITS
POWERS = 37  # the last power holds up to 2**42 ns (73 min): no call lasts longer
SIZE = POWERS * SUB_BUCKETS


def bucket_of(nanoseconds: int) -> int:
    """The bucket of a latency: exact below SUB_BUCKETS ns, then 64 per power of two."""
    if nanoseconds < SUB_BUCKETS:
        return max(nanoseconds, 0)
    power = nanoseconds.bit_length() - SUB_BITS  # >= 1 here
    index = power * SUB_BUCKETS + (nanoseconds >> (power - 1)) - SUB_BUCKETS
    return min(index, SIZE - 1)


def bucket_middle(index: int) -> float:
    """The middle of a bucket, in nanoseconds (what a percentile reports)."""
    if index < SUB_BUCKETS:
        return float(index)
    power, offset = divmod(index, SUB_BUCKETS)
    low = (SUB_BUCKETS + offset) << (power - 1)
    width = 1 << (power - 1)
    return low + width / 2


class Histogram:
    __slots__ = ("count", "counts", "total_ns")

    def __init__(self) -> None:
        self.counts = [0] * SIZE
        self.count = 0
        self.total_ns = 0

    def record(self, nanoseconds: int) -> None:
        self.counts[bucket_of(nanoseconds)] += 1
        self.count += 1
        self.total_ns += nanoseconds

    def percentile_us(self, fraction: float) -> float:
        """The latency `fraction` of the calls took at most, in microseconds (0 when empty)."""
        if self.count == 0:
            return 0.0
        rank = max(1, min(self.count, int(fraction * self.count + 0.999999)))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return bucket_middle(index) / 1000
        return bucket_middle(SIZE - 1) / 1000  # unreachable: the counts sum to count

    def mean_us(self) -> float:
        return self.total_ns / self.count / 1000 if self.count else 0.0
