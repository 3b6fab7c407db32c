"""Memory and work bounds of the core, each tested at its boundary.

Goal: (1) the label text ledgers hold is bounded in bytes (`Limits.max_label_bytes`),
counted as ledgers come and go, and hitting it behaves like `max_ledgers` (an idle
evictable ledger is evicted, else `LimitReached` naming the bound and nothing changed),
the same after a snapshot restore and a journal replay; the route memo is bounded in
label bytes too and never refuses a request. (2) A List call looks at no more than
`Limits.list_scan_per_page` ledgers or runs: a page may be empty while its token is set,
and following the tokens finds exactly what an unbounded scan finds. (3) The idempotency
memory is bounded by count and bytes, oldest first: at the bound the oldest id is
forgotten (its retry counts anew) while the newest is replayed, and
`idempotency_window` reports the age of the oldest id still remembered.

Method: small engines with tight limits, fixed instants; state is compared through
`export_state` (JSON round trip) and journals through `mutations.encode/decode`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from budgetd.core import (
    Engine,
    LedgerClosed,
    LedgerClosedReason,
    LedgerState,
    LimitReached,
    Limits,
    Policy,
    Usage,
)
from budgetd.core.ledger import ledger_text_bytes
from budgetd.core.mutations import decode, encode

T0 = 1_800_000_000.0
VALUE = "v" * 100  # a per-key value of 100 bytes: ledger "u{user=v...}" holds 209 bytes


def user_policy(evictable: bool = True, **extra: Any) -> Policy:
    return Policy.from_mapping({"name": "u", "per": ["user"], "evictable": evictable, **extra})


def ledger_bytes(engine: Engine) -> int:
    """The label bytes of the engine's ledgers, counted from scratch."""
    page = engine.list_ledgers(T0, page_size=1000)
    return sum(
        ledger_text_bytes((status.policy, *status.labels.values()), status.key)
        for status in page.ledgers
    )


def state_of(engine: Engine) -> Any:
    return json.loads(json.dumps(engine.export_state()))


def recording(engine: Engine) -> list[str]:
    journal: list[str] = []
    engine.recorder = lambda mutation: journal.append(json.dumps(encode(mutation)))
    return journal


# --- label bytes ------------------------------------------------------------------------


def test_label_bytes_are_counted_as_ledgers_are_created_and_removed() -> None:
    engine = Engine([user_policy()])
    engine.consume({"user": "é" * 10}, Usage(1), "c1", T0)  # 20 UTF-8 bytes, 10 chars
    engine.consume({"user": VALUE}, Usage(1), "c2", T0)
    first = len("u{user=}") + 2 * 20
    assert engine.label_bytes == first + len("u{user=}") + 2 * 100 == ledger_bytes(engine)
    engine.delete_policy("u", T0)
    assert engine.label_bytes == 0


def full_of_idle_ledgers(evictable: bool = True) -> Engine:
    """Room for exactly three ledgers' label text (and many more ledgers)."""
    size = ledger_text_bytes(("u", VALUE), "u{user=" + VALUE + "}")
    limits = Limits(max_label_bytes=3 * size, max_ledgers=1000)
    engine = Engine([user_policy(evictable)], limits=limits)
    for i in range(3):
        engine.consume({"user": f"{i}" + VALUE[1:]}, Usage(1), f"c{i}", T0 + i)
    assert engine.label_bytes == 3 * size
    return engine


def test_the_label_byte_bound_evicts_the_least_recently_used_idle_ledger() -> None:
    engine = full_of_idle_ledgers()
    _, events = engine.consume({"user": "3" + VALUE[1:]}, Usage(1), "c3", T0 + 10)
    closed = [e for e in events if isinstance(e, LedgerClosed)]
    assert [(e.ledger, e.reason) for e in closed] == [
        ("u{user=0" + VALUE[1:] + "}", LedgerClosedReason.EVICTED)
    ]
    assert closed[0].totals.requests == 1  # its final totals, for billing
    assert engine.ledger_count == 3 and engine.label_bytes == ledger_bytes(engine)
    assert engine.label_bytes <= engine.limits.max_label_bytes


def test_a_small_ledger_evicts_as_few_as_it_needs_a_large_one_as_many() -> None:
    engine = full_of_idle_ledgers()
    engine.consume({"user": "x"}, Usage(1), "small", T0 + 10)  # 10 bytes: one goes
    assert engine.ledger_count == 3
    big = "b" * 250  # 509 bytes: two more must go
    _, events = engine.consume({"user": big}, Usage(1), "big", T0 + 11)
    assert len([e for e in events if isinstance(e, LedgerClosed)]) == 2
    assert engine.label_bytes == ledger_bytes(engine) <= engine.limits.max_label_bytes


def test_without_an_evictable_ledger_the_bound_refuses_and_changes_nothing() -> None:
    engine = full_of_idle_ledgers(evictable=False)
    before = state_of(engine)
    journal = recording(engine)
    with pytest.raises(LimitReached) as raised:
        engine.consume({"user": "3" + VALUE[1:]}, Usage(1), "c3", T0 + 10)
    assert raised.value.limit == "max_label_bytes"
    assert "max_label_bytes" in str(raised.value)
    assert state_of(engine) == before and journal == []
    # A request whose ledgers exist is served all the same.
    assert engine.consume({"user": "0" + VALUE[1:]}, Usage(1), "c4", T0 + 11)[0].ledgers


def test_a_refused_large_ledger_does_not_refuse_a_smaller_one_that_fits() -> None:
    """The full scan that found too little for a large ledger is remembered, but only
    for requests needing as much or more."""
    engine = full_of_idle_ledgers()
    engine.open_run({"user": "0" + VALUE[1:]}, "r0", 60, "o0", T0 + 5)  # busy: not evictable
    engine.open_run({"user": "1" + VALUE[1:]}, "r1", 60, "o1", T0 + 5)
    with pytest.raises(LimitReached):
        engine.consume({"user": "b" * 250}, Usage(1), "big", T0 + 10)  # needs two
    engine.consume({"user": "x"}, Usage(1), "small", T0 + 11)  # needs one: there is one
    assert engine.ledger_count == 3


def test_a_ledger_larger_than_the_whole_bound_is_refused() -> None:
    engine = Engine([user_policy()], limits=Limits(max_label_bytes=100))
    with pytest.raises(LimitReached) as raised:
        engine.consume({"user": VALUE}, Usage(1), "c", T0)
    assert raised.value.limit == "max_label_bytes" and engine.ledger_count == 0


def test_label_bytes_survive_a_snapshot_and_a_journal_replay() -> None:
    engine = full_of_idle_ledgers()
    start = state_of(engine)
    journal = recording(engine)
    for i in range(3, 9):
        engine.consume({"user": f"{i}" * (10 * i)}, Usage(1), f"c{i}", T0 + 10 + i)
    restored = Engine.from_state(state_of(engine), limits=engine.limits)
    assert restored.label_bytes == engine.label_bytes == ledger_bytes(engine)
    replayed = Engine.from_state(start, limits=engine.limits)
    for line in journal:
        replayed.apply(decode(json.loads(line)))
    assert state_of(replayed) == state_of(engine)
    assert replayed.label_bytes == engine.label_bytes


def test_the_route_memo_is_bounded_in_label_bytes_and_never_refuses() -> None:
    limits = Limits(route_memo_label_bytes=1000, route_memo_entries=1000)
    engine = Engine([Policy.from_mapping({"name": "all"})], limits=limits)
    for i in range(50):
        engine.consume({"k": f"{i:03d}" + "x" * 97}, Usage(1), f"c{i}", T0)  # 101 bytes
    assert engine._route_bytes <= 1000 and len(engine._routes) == 9
    huge = {key: "y" * 256 for key in "abcd"}  # 1,028 bytes: more than the whole memo
    engine.consume(huge, Usage(1), "huge", T0)
    assert engine._route_bytes <= 1000 and len(engine._routes) == 9
    assert engine.get_ledger("all", T0).totals.requests == 51


# --- bounded scans ----------------------------------------------------------------------


def thirty_ledgers() -> Engine:
    """30 ledgers, every third one (serials 3, 6, ...) at WARNING or worse."""
    policy = Policy.from_mapping({"name": "u", "per": ["user"], "caps": {"total_tokens": 100}})
    engine = Engine([policy], limits=Limits(list_scan_per_page=7))
    for i in range(30):
        engine.consume({"user": f"u{i:02d}"}, Usage(90 if i % 3 == 2 else 1), f"c{i}", T0)
    return engine


def all_pages(engine: Engine, **filters: Any) -> list[tuple[int, str]]:
    """(ledgers on the page, token) of every page, following tokens to the end."""
    pages: list[tuple[int, str]] = []
    token = ""
    while True:
        page = engine.list_ledgers(T0, page_size=5, page_token=token, **filters)
        pages.append((len(page.ledgers), page.next_page_token))
        token = page.next_page_token
        if not token:
            return pages


def test_a_filtered_list_looks_at_a_bounded_number_of_ledgers_per_call() -> None:
    engine = thirty_ledgers()
    first = engine.list_ledgers(T0, min_state=LedgerState.WARNING, page_size=5)
    # Serials 1..7 looked at: two matches (3 and 6), and a token that goes on from 7.
    assert len(first.ledgers) == 2 and first.next_page_token == "7"
    pages = all_pages(engine, min_state=LedgerState.WARNING)
    assert sum(n for n, _ in pages) == 10
    assert len(pages) == 5 and all(t.isascii() and t.isdigit() for _, t in pages[:-1])


def test_a_page_with_no_match_still_carries_the_token_on() -> None:
    engine = thirty_ledgers()
    page = engine.list_ledgers(T0, selector={"user": "u29"}, page_size=5)
    assert page.ledgers == () and page.next_page_token == "7"
    pages = all_pages(engine, selector={"user": "u29"})
    assert [n for n, _ in pages] == [0, 0, 0, 0, 1]


def test_following_tokens_finds_what_an_unbounded_scan_finds() -> None:
    engine = thirty_ledgers()
    wide = Engine.from_state(state_of(engine), limits=Limits(list_scan_per_page=1000))
    for filters in ({"min_state": LedgerState.WARNING}, {"policy": "u"}, {}):
        keys: list[str] = []
        token = ""
        while True:
            page = engine.list_ledgers(T0, page_size=4, page_token=token, **filters)
            keys += [status.key for status in page.ledgers]
            token = page.next_page_token
            if not token:
                break
        expected = [s.key for s in wide.list_ledgers(T0, page_size=1000, **filters).ledgers]
        assert keys == expected


def test_list_runs_looks_at_a_bounded_number_of_runs_per_call() -> None:
    engine = Engine([user_policy()], limits=Limits(list_scan_per_page=4))
    for i in range(10):
        engine.open_run({"user": "a" if i == 8 else "b"}, f"run-{i}", 60, f"o{i}", T0)
    engine.close_run("run-0", "x0", T0)
    found: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = engine.list_runs(selector={"user": "a"}, page_size=10, page_token=token)
        found += [run.run_id for run in page.runs]
        sizes.append(len(page.runs))
        token = page.next_page_token
        if not token:
            break
    assert found == ["run-8"] and sizes == [0, 1, 0]  # 9 open runs, 4 a call
    restored = Engine.from_state(state_of(engine), limits=engine.limits)
    every = restored.list_runs(page_size=3)
    assert [r.run_id for r in every.runs] == ["run-1", "run-2", "run-3"]


# --- idempotency ------------------------------------------------------------------------


def meter(limits: Limits) -> Engine:
    return Engine([Policy.from_mapping({"name": "all"})], limits=limits)


def requests(engine: Engine, now: float) -> int:
    return engine.get_ledger("all", now).totals.requests


def test_at_the_count_bound_the_oldest_id_is_forgotten_and_the_newest_replayed() -> None:
    engine = meter(Limits(idempotency_max_entries=5))
    assert engine.idempotency_window(T0) == 0.0
    for i in range(5):
        engine.consume({}, Usage(1), f"c{i}", T0 + 10 * i)  # c0 at T0 ... c4 at T0+40
    assert engine.remembered_requests == 5
    assert engine.idempotency_window(T0 + 50) == 50.0  # c0 is still recognised
    engine.consume({}, Usage(1), "c5", T0 + 50)  # over the bound: c0 goes
    assert engine.remembered_requests == 5
    assert engine.idempotency_window(T0 + 50) == 40.0  # the oldest now is c1, at T0+10
    assert engine.consume({}, Usage(1), "c5", T0 + 51)[0].replayed is True
    assert engine.consume({}, Usage(1), "c1", T0 + 51)[0].replayed is True
    assert requests(engine, T0 + 51) == 6
    # Documented: a retry older than the window is counted anew (and remembered again).
    assert engine.consume({}, Usage(1), "c0", T0 + 52)[0].replayed is False
    assert requests(engine, T0 + 52) == 7
    assert engine.idempotency_window(T0 + 52) == 32.0  # c2, at T0+20, is the oldest now


def test_the_byte_bound_forgets_more_ids_when_their_labels_are_large() -> None:
    small = meter(Limits(idempotency_max_bytes=10_000))
    large = meter(Limits(idempotency_max_bytes=10_000))
    for i in range(40):
        small.consume({"k": "v"}, Usage(1), f"c{i:02d}", T0 + i)
        large.consume({"k": "v" * 256, "j": "w" * 256}, Usage(1), f"c{i:02d}", T0 + i)
    assert small.remembered_request_bytes <= 10_000 and large.remembered_request_bytes <= 10_000
    assert large.remembered_requests < small.remembered_requests < 40
    assert large.idempotency_window(T0 + 40) < small.idempotency_window(T0 + 40)
    for engine in (small, large):
        newest, oldest_kept = 39, 40 - engine.remembered_requests
        labels = {"k": "v"} if engine is small else {"k": "v" * 256, "j": "w" * 256}
        assert engine.consume(labels, Usage(1), f"c{newest}", T0 + 41)[0].replayed
        assert engine.consume(labels, Usage(1), f"c{oldest_kept:02d}", T0 + 41)[0].replayed
        assert engine.idempotency_window(T0 + 41) == 41 - oldest_kept


def test_the_age_bound_caps_the_window() -> None:
    engine = meter(Limits(idempotency_max_age_s=100))
    engine.consume({}, Usage(1), "c", T0)
    assert engine.idempotency_window(T0 + 100.5) == 100.0  # not swept yet: still known
    engine.expire(T0 + 100.5)
    assert engine.remembered_requests == 0 and engine.remembered_request_bytes == 0
    assert engine.idempotency_window(T0 + 100.5) == 0.0


def test_the_memory_and_its_window_survive_a_snapshot_and_a_journal_replay() -> None:
    limits = Limits(idempotency_max_bytes=8_000)
    engine = meter(limits)
    start = state_of(engine)
    journal = recording(engine)
    for i in range(30):
        engine.consume({"k": "v" * (i * 8)}, Usage(1), f"c{i}", T0 + i)
    restored = Engine.from_state(state_of(engine), limits=limits)
    replayed = Engine.from_state(start, limits=limits)
    for line in journal:
        replayed.apply(decode(json.loads(line)))
    for other in (restored, replayed):
        assert other.remembered_requests == engine.remembered_requests
        assert other.remembered_request_bytes == engine.remembered_request_bytes
        assert other.idempotency_window(T0 + 30) == engine.idempotency_window(T0 + 30)
        other.consume({}, Usage(1), "next", T0 + 31)  # and they forget the same id next
    engine.consume({}, Usage(1), "next", T0 + 31)
    assert state_of(restored)["done"] == state_of(engine)["done"] == state_of(replayed)["done"]
