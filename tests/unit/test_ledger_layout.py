"""A ledger keeps only what must be its own, and what it derives is what it kept before.

Goal: the compact layout of `budgetd.core.ledger.Ledger` (issue 13: bytes per ledger at
a million ledgers) changes no answer. Method: drive an `Engine` and a bare `Ledger` and
check the derived values (ident, labels, label bytes, first and last use) against
their definitions, the shared values (NO_HOLDS, the brief) for sharing and identity,
and the key round trip (`key_of` / `key_values`) on hostile label values.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetd.core import COMPILED, Engine, LedgerState, Policy, Usage
from budgetd.core.dimensions import VECTOR_SIZE
from budgetd.core.ledger import (
    NO_HOLDS,
    Ledger,
    format_key,
    hold,
    key_of,
    key_text_bytes,
    key_values,
    ledger_text_bytes,
    parse_key,
    release,
)

T0 = 1_700_000_000.0
USAGE = Usage(10, 5)


def policy(**data: Any) -> Policy:
    return Policy.from_mapping({"name": "p", **data})


def ledger_of(engine: Engine, key: str) -> Ledger:
    return engine._ledgers[key]


def test_a_ledger_without_holds_shares_no_holds_and_gets_its_own_list_while_held() -> None:
    engine = Engine([policy(per=["user"], caps={"total_tokens": 1000})])
    engine.consume({"user": "u"}, USAGE, "c1", T0)
    engine.consume({"user": "v"}, USAGE, "c2", T0)
    u, v = ledger_of(engine, "p{user=u}"), ledger_of(engine, "p{user=v}")
    assert u.reserved is NO_HOLDS and v.reserved is NO_HOLDS
    held, _ = engine.reserve({"user": "u"}, Usage(100, 100), 60.0, "r1", T0)
    again, _ = engine.reserve({"user": "u"}, Usage(10, 10), 60.0, "r2", T0)
    assert u.reserved is not NO_HOLDS and u.reserved[0] == 220 and u.holds == 2
    assert v.reserved is NO_HOLDS and NO_HOLDS == [0] * 5
    engine.release(held.reservation_id, "x1", T0)
    assert u.reserved[0] == 20 and u.holds == 1
    engine.commit(again.reservation_id, USAGE, "k1", T0)
    assert u.reserved is NO_HOLDS and u.holds == 0 and NO_HOLDS == [0] * 5


def test_releasing_what_was_never_held_breaks_an_invariant_and_writes_nothing_shared() -> None:
    ledger = Ledger("p", policy(), T0, 1)
    try:
        release([ledger], (1, 1, 0, 0, 1))
    except Exception as error:  # InvariantBroken
        assert "holds released" in str(error)
    else:
        raise AssertionError("release without a hold must raise")
    assert NO_HOLDS == [0] * 5 and ledger.holds == 0
    hold([ledger], (3, 2, 1, 0, 1))
    try:
        release([ledger], (2, 2, 1, 0, 1))  # other amounts than held
    except Exception as error:
        assert "holds released" in str(error)
    else:
        raise AssertionError("release of other amounts must raise")
    assert NO_HOLDS == [0] * 5


def test_the_brief_is_one_object_per_state_and_the_key_and_state_it_names() -> None:
    engine = Engine([policy(per=["user"], caps={"total_tokens": 100})])
    first, _ = engine.consume({"user": "u"}, Usage(10, 0), "c1", T0)
    second, _ = engine.consume({"user": "u"}, Usage(10, 0), "c2", T0)
    assert first.ledgers[0] is second.ledgers[0]  # unchanged state: the same object
    assert first.ledgers[0] == ("p{user=u}", LedgerState.OK)
    third, _ = engine.consume({"user": "u"}, Usage(60, 0), "c3", T0)  # 80 %: warning
    assert third.ledgers[0] == ("p{user=u}", LedgerState.WARNING)
    assert third.ledgers[0] is not first.ledgers[0]
    ledger = ledger_of(engine, "p{user=u}")
    assert ledger.brief is ledger.brief is third.ledgers[0]


def test_derived_values_are_those_of_the_definitions() -> None:
    engine = Engine(
        [
            policy(
                match={"team": "x", "env": "*"},
                per=["user", "model"],
                missing={"model": "any"},
            )
        ]
    )
    engine.consume({"team": "x", "env": "e", "user": "a,b={c}%"}, USAGE, "c1", T0)
    key = "p{user=a%2Cb%3D%7Bc%7D%25,model=any}"
    ledger = ledger_of(engine, key)
    assert ledger.key == key
    assert ledger.ident == ("p", "a,b={c}%", "any")
    assert ledger.label_map == {"team": "x", "user": "a,b={c}%", "model": "any"}
    assert ledger.label_bytes == ledger_text_bytes(ledger.ident, key) == engine.label_bytes
    assert (ledger.first_use, ledger.last_use) == (T0, T0)
    fresh = Ledger("p{user=u,model=m}", ledger.policy, T0, 2)
    assert (fresh.first_use, fresh.last_use) == (None, None)


def test_a_list_selector_selects_on_the_labels_it_would_compare() -> None:
    engine = Engine([policy(match={"team": "x", "env": "*"}, per=["user"])])
    engine.consume({"team": "x", "env": "e", "user": "u"}, USAGE, "c1", T0)
    ledger = ledger_of(engine, "p{user=u}")
    for selector in (
        {},
        {"team": "x"},
        {"user": "u"},
        {"team": "x", "user": "u"},
        {"team": "y"},
        {"user": "v"},
        {"env": "*"},
        {"env": "e"},
        {"other": "u"},
    ):
        wanted = all(ledger.label_map.get(k) == v for k, v in selector.items())
        page = engine.list_ledgers(T0, selector=selector)
        assert [s.key for s in page.ledgers] == (["p{user=u}"] if wanted else []), selector


LABEL_VALUE = st.text(alphabet=st.sampled_from("ab%,={}25CDB7"), min_size=0, max_size=12)


@given(values=st.lists(LABEL_VALUE, min_size=1, max_size=3))
def test_a_key_gives_back_the_values_it_was_made_of(values: list[str]) -> None:
    per = [f"k{i}" for i in range(len(values))]
    p = policy(per=per)
    labels = dict(zip(per, values, strict=True))
    key = key_of(p, labels)
    assert key == format_key(("p", *values), p.per)
    assert key_values(key, p) == tuple(values)
    assert parse_key(key) == ("p", labels)
    assert key_text_bytes(key, p) == ledger_text_bytes(("p", *values), key)


@given(st.lists(st.integers(-(2**70), 2**70), min_size=VECTOR_SIZE, max_size=VECTOR_SIZE))
def test_the_counter_fields_are_the_counter_vector(vector: list[int]) -> None:
    # The counters are one field per slot (unboxed when compiled); every reader by slot
    # and every writer of the vector must agree on which field is which slot.
    ledger = Ledger("p", policy(), T0, 1)
    assert ledger.counts() == [0] * VECTOR_SIZE and not ledger.has_window_counts()
    ledger.set_counts(vector)
    assert ledger.counts() == vector
    assert [ledger.count(slot) for slot in range(VECTOR_SIZE)] == vector
    assert ledger.same_counts(vector) and ledger.counts() is not ledger.counts()
    ledger.subtract(vector)
    assert ledger.counts() == [v if slot == 5 else 0 for slot, v in enumerate(vector)]
    ledger.set_counts(vector, open_runs=3)
    assert ledger.count(5) == 3
    with pytest.raises(IndexError):
        ledger.count(VECTOR_SIZE)


def test_a_compiled_ledger_is_compact() -> None:
    """Holding nothing, a ledger is its object, its counters, its key and its brief."""
    engine = Engine([policy(per=["user"], caps={"total_tokens": 1000})])
    engine.consume({"user": "u"}, USAGE, "c1", T0)
    ledger = ledger_of(engine, "p{user=u}")
    assert ledger.more_triggers == [] and ledger.buckets is None
    if COMPILED:
        assert sys.getsizeof(ledger) <= 304
