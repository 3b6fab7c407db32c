"""Inputs that once broke answers, each held to a clear error or a right answer, in the core.

Goal: page tokens are ASCII digits only (Unicode digits are INVALID_ARGUMENT, not a crash);
instants too far for a protobuf Timestamp are clamped on the wire; SetLedgerLimits of a
missing ledger is NOT_FOUND and creates nothing; eviction does not get stuck behind a
window of ledgers it may not evict, and a refusal changes no state (a restored engine
evicts the same ledger).
"""

from __future__ import annotations

import json
import math

import pytest

from budgetd import convert
from budgetd.core import (
    Dimension,
    Engine,
    InvalidArgument,
    LedgerClosed,
    LedgerClosedReason,
    LimitReached,
    Limits,
    NotFound,
    Policy,
    Usage,
)

T0 = 1_700_000_000.0


@pytest.mark.parametrize("token", ["²", "١٢", "12a", "-1", " 1", "9" * 21, "1.0"])
def test_page_tokens_are_ascii_digits_this_server_returned(token: str) -> None:
    engine = Engine([Policy.from_mapping({"name": "u", "per": ["user"]})])
    engine.consume({"user": "a"}, Usage(1), "c", T0)
    with pytest.raises(InvalidArgument) as raised:
        engine.list_ledgers(T0, page_token=token)
    assert raised.value.field == "page_token"


@pytest.mark.parametrize(
    ("instant", "seconds"),
    [
        (math.inf, convert.MAX_TIMESTAMP_S),
        (1e300, convert.MAX_TIMESTAMP_S),
        (-1e300, convert.MIN_TIMESTAMP_S),
        (math.nan, convert.MAX_TIMESTAMP_S),
        (T0 + 0.5, int(T0)),
    ],
)
def test_instants_beyond_the_timestamp_range_are_clamped(instant: float, seconds: int) -> None:
    assert convert.timestamp(instant).seconds == seconds
    convert.timestamp(instant).ToJsonString()  # a valid Timestamp: it serializes


def test_set_ledger_limits_of_a_missing_ledger_is_not_found_and_creates_nothing() -> None:
    engine = Engine([Policy.from_mapping({"name": "u", "per": ["user"]})])
    with pytest.raises(NotFound):
        engine.set_ledger_limits("u{user=ghost}", [(Dimension.TOTAL_TOKENS, 5)], T0)
    assert engine.ledger_count == 0


def crowded() -> Engine:
    """2,000 ledgers no eviction may touch, then 1,000 idle evictable ones: full."""
    pinned = Policy.from_mapping({"name": "pinned", "per": ["x"], "evictable": False})
    loose = Policy.from_mapping({"name": "loose", "per": ["y"], "evictable": True})
    engine = Engine([pinned, loose], limits=Limits(max_ledgers=3000))
    for i in range(2000):
        engine.consume({"x": str(i)}, Usage(1), f"p{i}", T0 + i)
    for i in range(1000):
        engine.consume({"y": str(i)}, Usage(1), f"l{i}", T0 + 2000 + i)
    return engine


def test_eviction_moves_past_a_window_of_ledgers_it_may_not_evict() -> None:
    engine = crowded()
    restored = Engine.from_state(
        json.loads(json.dumps(engine.export_state())), limits=engine.limits
    )
    for e in (engine, restored):
        _, events = e.consume({"y": "new"}, Usage(1), "new", T0 + 9000)
        (closed,) = [x for x in events if isinstance(x, LedgerClosed)]
        assert (closed.ledger, closed.reason) == ("loose{y=0}", LedgerClosedReason.EVICTED)
        assert e.ledger_count == 3000
        _, events = e.consume({"y": "newer"}, Usage(1), "newer", T0 + 9001)
        assert [x.ledger for x in events if isinstance(x, LedgerClosed)] == ["loose{y=1}"]


def test_a_table_with_nothing_evictable_refuses_and_changes_nothing() -> None:
    pinned = Policy.from_mapping({"name": "pinned", "per": ["x"], "evictable": False})
    engine = Engine([pinned], limits=Limits(max_ledgers=100))
    for i in range(100):
        engine.consume({"x": str(i)}, Usage(1), f"p{i}", T0)
    before = json.dumps(engine.export_state(), sort_keys=True)
    for attempt in range(3):  # the second and third refusals skip the full scan
        with pytest.raises(LimitReached):
            engine.consume({"x": "more"}, Usage(1), f"more{attempt}", T0 + 1)
    assert json.dumps(engine.export_state(), sort_keys=True) == before
    engine.put_policy(
        Policy.from_mapping({"name": "pinned", "per": ["x"], "evictable": True}),
        T0 + 2,
        apply_to_existing=True,
    )
    engine.consume({"x": "more"}, Usage(1), "after", T0 + 3)  # evictable now: room is made
    assert engine.ledger_count == 100
