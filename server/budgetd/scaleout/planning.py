"""What the leaser asks Redis for one global ledger window: pure functions of its share.

Per capped dimension, a sidecar keeps a slice of the cap it has not used yet (its
lease's remainder). The slice it aims for follows local demand, between min_slice and
max_slice of the cap: enough for about two sync intervals of recent use. Below half of
the aim it leases up to the aim; above twice the aim (demand dropped) it gives the
excess back. Usage is settled on every sync that has any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budgetd.core.dimensions import Dimension
from budgetd.core.shares import SHARED_SLOTS, Share, unsettled

GAUGE = int(Dimension.CONCURRENCY)
# Sync intervals of recent use a slice should last.
SLICE_INTERVALS = 2


@dataclass(frozen=True, slots=True)
class Plan:
    """One sync of a share: a settle (when `seq`), then a lease (when any want)."""

    seq: int  # 0: nothing to settle
    used: list[int]  # per slot: own usage to settle
    give_back: dict[int, int]  # per capped dimension
    wants: dict[int, int]  # per capped dimension: how much more to lease

    @property
    def settles(self) -> bool:
        return self.seq > 0


def aim(limit: int, recent_use: int, min_slice: float, max_slice: float) -> int:
    """The slice to hold: about SLICE_INTERVALS of recent use, within the bounds."""
    low = max(1, int(limit * min_slice))
    high = max(1, int(limit * max_slice))
    return max(low, min(high, recent_use * SLICE_INTERVALS))


def remaining(share: Share, dimension: int, counts: Sequence[int], held: int) -> int:
    """What the lease still allows of `dimension` (held: reserved or open now)."""
    if dimension == GAUGE:
        return share.allowance.get(GAUGE, 0) - counts[GAUGE]
    own = counts[dimension] - share.absorbed[dimension]
    return share.allowance.get(dimension, 0) - own - held


def plan(
    share: Share,
    counts: Sequence[int],
    reserved: Sequence[int],
    caps: Sequence[tuple[int, int]],
    recent_use: dict[int, int],
    min_slice: float,
    max_slice: float,
    closing: bool = False,
) -> Plan:
    """The next sync of `share` (a closing share settles all and gives all back)."""
    owed = unsettled(list(counts), share)
    give_back: dict[int, int] = {}
    wants: dict[int, int] = {}
    for dimension, limit in caps:
        held = reserved[dimension] if dimension < len(reserved) else 0
        left = max(0, remaining(share, dimension, counts, held))
        if closing:
            if left:
                give_back[dimension] = left
            continue
        target = aim(limit, recent_use.get(dimension, 0), min_slice, max_slice)
        if left < target // 2 or left == 0:
            wants[dimension] = target - left
        elif left > 2 * target:
            give_back[dimension] = left - target
    has_usage = any(owed[i] for i in SHARED_SLOTS)
    if has_usage or give_back:
        used = [owed[i] if i in SHARED_SLOTS else 0 for i in range(len(owed))]
        return Plan(share.seq + 1, used, give_back, wants)
    return Plan(0, [0] * len(owed), {}, wants)
