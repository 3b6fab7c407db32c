"""The collector tuning (budgetd.tuning): pauses are timed, the oldest generation is
frozen once it grows past the bound, and a freeze keeps no garbage.

Goal: GetServerInfo's gc figures come from every collection the process runs; what
`maintain` freezes is only what is alive (a reference cycle dropped before it is
collected, not frozen); below the bound, or without a middle-generation collection
since the last look, it does nothing.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from budgetd.tuning import Collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector(freeze_above=1_000)
    collector.install()
    yield collector
    collector.uninstall()
    gc.unfreeze()  # leave the process's heap as the other tests expect it


def _promoted(count: int) -> list[list[int]]:
    """`count` live containers moved into the oldest generation."""
    kept = [[i] for i in range(count)]
    gc.collect(1)  # young and middle survivors go to the oldest generation
    return kept


def test_every_collection_is_counted_and_timed(collector: Collector) -> None:
    before = collector.collections
    gc.collect()
    gc.collect(0)
    assert collector.collections == before + 2
    assert collector.longest_pause_s > 0
    collector.uninstall()
    gc.collect()
    assert collector.collections == before + 2  # no longer installed


def test_the_oldest_generation_is_frozen_past_the_bound_and_garbage_is_not(
    collector: Collector,
) -> None:
    frozen = gc.get_freeze_count()
    kept = _promoted(5_000)
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, dropped below: garbage only the collector finds
    gone = weakref.ref(a)
    gc.collect(1)
    del a, b
    assert collector.maintain()
    assert collector.freezes == 1
    assert gone() is None  # collected before the freeze, not kept for ever
    assert gc.get_freeze_count() >= frozen + len(kept)


def test_nothing_is_frozen_below_the_bound_or_without_new_survivors(
    collector: Collector,
) -> None:
    collector.freeze_above = 10_000_000
    _promoted(100)
    assert not collector.maintain()
    collector.freeze_above = 1_000
    assert not collector.maintain()  # no middle collection since the last look
    kept = _promoted(5_000)
    assert collector.maintain()
    assert len(kept) == 5_000
