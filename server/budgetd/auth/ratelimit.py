"""Per-identity request rates: one token bucket per token, uid or certificate.

A bucket holds up to `burst` requests and refills at `per_second`; a call takes one.
An empty bucket answers how long until the next request fits, which the gate sends back
as the retry hint. Time is an argument (monotonic seconds), so the arithmetic is tested
without a clock.
"""

from __future__ import annotations

from budgetd.auth.caller import Rate

# Buckets are per identity, and identities come from the configuration (tokens, listed
# uids, members of listed groups, mapped certificates), but group membership can name
# many uids: past this many buckets, full ones (equivalent to new) are dropped first.
MAX_BUCKETS = 65_536


class _Bucket:
    __slots__ = ("rate", "stamp", "tokens")

    def __init__(self, rate: Rate, stamp: float) -> None:
        self.rate = rate  # the last one used: a reload may change an identity's rate
        self.tokens = float(rate.burst)
        self.stamp = stamp

    def full_at(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate.per_second >= self.rate.burst


class RateLimiter:
    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._max = max_buckets

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, rate: Rate, now: float, cost: int = 1) -> float:
        """Take `cost` requests (a batch's operations) from `key`'s bucket: 0.0 when one
        fits, else the seconds until one would (nothing is taken then). A batch larger
        than what is left (or than the burst) still goes once one request fits, and
        leaves the bucket in debt: the average rate holds, and no batch size is refused
        for ever."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._make_room(now)
            bucket = self._buckets[key] = _Bucket(rate, now)
        else:
            bucket.rate = rate
            elapsed = now - bucket.stamp
            if elapsed > 0:
                bucket.tokens = min(float(rate.burst), bucket.tokens + elapsed * rate.per_second)
                bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= cost
            return 0.0
        return (1.0 - bucket.tokens) / rate.per_second

    def _make_room(self, now: float) -> None:
        """Drop the buckets that have refilled by now (a new one would be the same);
        if none has, the least recently used half."""
        full = [key for key, bucket in self._buckets.items() if bucket.full_at(now)]
        if not full:
            by_age = sorted(self._buckets, key=lambda key: self._buckets[key].stamp)
            full = by_age[: max(1, len(by_age) // 2)]
        for key in full:
            del self._buckets[key]
