"""What the leaser asks Redis for (budgetd.scaleout.planning), as pure functions.

Goal: the slice aimed for follows recent demand within [min_slice, max_slice] of the
cap; a sidecar leases up to the aim when below half of it, gives the excess back when
above twice it, settles whatever usage Redis does not have, and a closing share settles
everything and gives everything back; a settle always takes the next sequence number.
"""

from __future__ import annotations

from budgetd.core.dimensions import VECTOR_SIZE, Dimension
from budgetd.core.shares import Share
from budgetd.scaleout.planning import aim, plan

TOKENS = int(Dimension.TOTAL_TOKENS)
SLOTS = int(Dimension.CONCURRENCY)
CAPS = [(TOKENS, 100_000)]
NO_HOLDS = [0] * 5


def _counts(tokens: int = 0, runs: int = 0) -> list[int]:
    counts = [0] * VECTOR_SIZE
    counts[TOKENS] = tokens
    counts[SLOTS] = runs
    return counts


def _share(allowance: int, absorbed: int = 0, settled: int = 0, seq: int = 0) -> Share:
    share = Share(0.0, {TOKENS: allowance}, seq=seq)
    share.absorbed[TOKENS] = absorbed
    share.settled[TOKENS] = settled
    return share


def test_the_aim_follows_demand_within_the_bounds() -> None:
    assert aim(100_000, 0, 0.001, 0.01) == 100  # no demand: the smallest slice
    assert aim(100_000, 300, 0.001, 0.01) == 600  # two intervals of recent use
    assert aim(100_000, 10_000, 0.001, 0.01) == 1_000  # never past max_slice
    assert aim(10, 0, 0.001, 0.01) == 1  # at least one unit


def test_below_half_the_aim_it_leases_up_to_the_aim() -> None:
    share = _share(allowance=600, settled=550)
    planned = plan(share, _counts(tokens=550), NO_HOLDS, CAPS, {TOKENS: 300}, 0.001, 0.01)
    assert planned.wants == {TOKENS: 600 - 50}
    assert not planned.settles  # nothing to settle, nothing to give back


def test_usage_redis_lacks_is_settled_with_the_next_sequence() -> None:
    share = _share(allowance=1_000, settled=200, seq=4)
    planned = plan(share, _counts(tokens=450), NO_HOLDS, CAPS, {TOKENS: 250}, 0.001, 0.01)
    assert planned.seq == 5
    assert planned.used[TOKENS] == 250
    assert planned.give_back == {}


def test_the_others_usage_is_not_settled_as_own() -> None:
    share = _share(allowance=1_000, absorbed=5_000, settled=100)
    planned = plan(share, _counts(tokens=5_100), NO_HOLDS, CAPS, {TOKENS: 0}, 0.001, 0.01)
    assert planned.used[TOKENS] == 0  # 5,000 of the others, 100 own already settled
    assert planned.give_back == {TOKENS: 900 - 100}  # own use 100 of 1,000: 900 left


def test_above_twice_the_aim_the_excess_goes_back() -> None:
    share = _share(allowance=1_000, settled=0)
    planned = plan(share, _counts(), NO_HOLDS, CAPS, {TOKENS: 0}, 0.001, 0.01)
    assert planned.give_back == {TOKENS: 1_000 - 100}
    assert planned.settles and planned.wants == {}


def test_a_closing_share_settles_all_and_gives_all_back() -> None:
    share = _share(allowance=1_000, settled=100)
    planned = plan(share, _counts(tokens=400), NO_HOLDS, CAPS, {}, 0.001, 0.01, closing=True)
    assert planned.used[TOKENS] == 300
    assert planned.give_back == {TOKENS: 600}
    assert planned.wants == {}


def test_held_amounts_count_against_the_lease() -> None:
    share = _share(allowance=200, settled=0)
    holds = [150, 0, 0, 0, 0]
    planned = plan(share, _counts(), holds, CAPS, {TOKENS: 100}, 0.001, 0.01)
    assert planned.wants == {TOKENS: 200 - 50}  # 50 left of 200: below half the aim
