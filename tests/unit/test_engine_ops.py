"""Every engine operation keeps its contract, at every bound and on every failure path.

Goal: reserve/commit/release/consume, runs, idempotency, the request-edge bounds, the
capacity bounds, the administrative operations, listing, and the sliding and fixed
windows behave as the docstrings and DESIGN.md section 2 say. Method: drive a
`budgetd.core.Engine` with explicit instants and compare results, events and ledger
statuses; a failed operation must leave every status exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from budgetd.core import (
    Conflict,
    Decision,
    Denied,
    Dimension,
    DimensionStatus,
    Engine,
    InvalidArgument,
    LedgerClosed,
    LedgerClosedReason,
    LedgerState,
    LedgerStatus,
    LimitReached,
    Limits,
    NotFound,
    Overrun,
    Policy,
    PolicyChanged,
    ReservationExpired,
    RunEnded,
    ThresholdCrossed,
    Usage,
    UsageRecorded,
    WindowRolledOver,
)

T0 = 1_700_000_000.0
TOTAL = Dimension.TOTAL_TOKENS
DAY = 86_400
NEW_YORK = ZoneInfo("America/New_York")

E = TypeVar("E")
Snapshot = tuple[tuple[LedgerStatus, ...], int, int]


def of_type(events: Iterable[object], kind: type[E]) -> list[E]:
    """The events of one type, in order."""
    return [event for event in events if isinstance(event, kind)]


def policy(data: Mapping[str, Any]) -> Policy:
    return Policy.from_mapping(data)


def users(cap: int | None = 1000, **extra: Any) -> Policy:
    """A per-user policy capping total tokens (a meter when `cap` is None)."""
    caps = {} if cap is None else {"total_tokens": cap}
    return policy({"name": "users", "per": ["user"], "caps": caps, **extra})


def tokens(n: int) -> Usage:
    return Usage(input_tokens=n)


def with_field(usage: Usage, name: str, value: int) -> Usage:
    """`usage` with one token field replaced."""
    changes: dict[str, Any] = {name: value}
    return replace(usage, **changes)


def dim(engine: Engine, key: str, now: float, dimension: Dimension = TOTAL) -> DimensionStatus:
    """The status of one capped dimension of one ledger."""
    matches = [d for d in engine.get_ledger(key, now).dimensions if d.dimension is dimension]
    assert len(matches) == 1, f"{key} has no cap on {dimension.name}"
    return matches[0]


def snapshot(engine: Engine, now: float) -> Snapshot:
    """Everything observable: every ledger's status, the hold count and the run count."""
    page = engine.list_ledgers(now, page_size=1000)
    assert page.next_page_token == ""
    return page.ledgers, engine.reservation_count, engine.run_count


def meter_engine(limits: Limits | None = None) -> Engine:
    return Engine([policy({"name": "all"})], limits=limits)


# --- reserve, commit, release, consume ---------------------------------------------------


def test_reserve_holds_in_every_matching_ledger() -> None:
    """A granted reserve holds the estimate in every matching ledger and nowhere else."""
    engine = Engine(
        [
            users(1000),
            policy({"name": "global", "caps": {"total_tokens": 5000}}),
            policy({"name": "meter", "per": ["agent"]}),
            policy({"name": "team-x", "match": {"team": "x"}, "caps": {"total_tokens": 10}}),
        ]
    )
    labels = {"user": "u", "agent": "a"}
    result, _ = engine.reserve(labels, Usage(input_tokens=100, output_tokens=20), 60, "r1", T0)
    assert result.decision is Decision.ALLOW
    assert result.reservation_id != ""
    assert result.expires_at == T0 + 60
    assert [key for key, _ in result.ledgers] == ["users{user=u}", "global", "meter{agent=a}"]
    for key in ("users{user=u}", "global", "meter{agent=a}"):
        status = engine.get_ledger(key, T0)
        assert status.reservations == 1
        assert status.totals.total_tokens == 0
    assert (dim(engine, "users{user=u}", T0).reserved, dim(engine, "global", T0).reserved) == (
        120,
        120,
    )
    with pytest.raises(NotFound):
        engine.get_ledger("team-x", T0)
    assert engine.reservation_count == 1


def test_denied_reserve_holds_nothing() -> None:
    """A reserve one ledger denies holds nothing in any ledger (all-or-nothing)."""
    engine = Engine([users(1000), policy({"name": "global", "caps": {"total_tokens": 50}})])
    result, _ = engine.reserve({"user": "u"}, tokens(100), 60, "r1", T0)
    assert result.decision is Decision.DENY
    assert (result.reservation_id, result.expires_at) == ("", None)
    assert [b.ledger for b in result.blockers] == ["global"]
    assert engine.reservation_count == 0
    for key in ("users{user=u}", "global"):
        assert engine.get_ledger(key, T0).reservations == 0
        assert dim(engine, key, T0).reserved == 0
    fits, _ = engine.reserve({"user": "u"}, tokens(50), 60, "r2", T0 + 1)
    assert fits.decision is Decision.ALLOW


def test_commit_replaces_the_hold_by_the_actual_usage() -> None:
    """Commit drops the hold and records the actual usage, with no overrun when smaller."""
    engine = Engine([users(1000)])
    held, _ = engine.reserve({"user": "u"}, tokens(100), 60, "r1", T0)
    result, events = engine.commit(held.reservation_id, tokens(80), "c1", T0 + 1)
    assert (result.overruns, result.late, result.crossings) == ((), False, ())
    status = dim(engine, "users{user=u}", T0 + 1)
    assert (status.used, status.reserved) == (80, 0)
    assert engine.get_ledger("users{user=u}", T0 + 1).reservations == 0
    recorded = of_type(events, UsageRecorded)
    assert [(e.request_id, e.usage, e.ledgers) for e in recorded] == [
        ("c1", tokens(80), (("users{user=u}", LedgerState.OK),))
    ]
    assert engine.reservation_count == 0


def test_commit_above_the_estimate_reports_overruns_and_records_past_a_hard_cap() -> None:
    """Actual usage above the hold is recorded in full, even past the cap, and reported."""
    engine = Engine([users(1000)])
    held, _ = engine.reserve({"user": "u"}, tokens(900), 60, "r1", T0)
    result, _ = engine.commit(
        held.reservation_id, Usage(input_tokens=1000, output_tokens=200), "c1", T0 + 1
    )
    assert result.overruns == (
        Overrun(Dimension.TOTAL_TOKENS, 900, 1200),
        Overrun(Dimension.INPUT_TOKENS, 900, 1000),
        Overrun(Dimension.OUTPUT_TOKENS, 0, 200),
    )
    assert result.ledgers == (("users{user=u}", LedgerState.EXHAUSTED),)
    assert [c.percent for c in result.crossings] == [75, 90, 95]
    status = dim(engine, "users{user=u}", T0 + 1)
    assert (status.used, status.reserved, status.remaining) == (1200, 0, 0)


def test_release_drops_a_hold_without_recording_usage() -> None:
    """Release frees the held amount; the reservation id is then unknown."""
    engine = Engine([users(1000)])
    held, _ = engine.reserve({"user": "u"}, tokens(100), 60, "r1", T0)
    result, events = engine.release(held.reservation_id, "x1", T0 + 1)
    assert (result.released, result.replayed, events) == (True, False, [])
    status = dim(engine, "users{user=u}", T0 + 1)
    assert (status.used, status.reserved) == (0, 0)
    assert engine.get_ledger("users{user=u}", T0 + 1).totals.requests == 0
    with pytest.raises(NotFound):
        engine.release(held.reservation_id, "x2", T0 + 2)
    with pytest.raises(NotFound):
        engine.commit(held.reservation_id, tokens(1), "c1", T0 + 2)


def test_expired_reservation_emits_event_and_a_late_commit_still_records() -> None:
    """expire() drops a hold at its ttl with ReservationExpired; commit is then late=True."""
    engine = Engine([users(1000)])
    labels = {"user": "u"}
    held, _ = engine.reserve(labels, tokens(100), 30, "r1", T0)
    assert of_type(engine.expire(T0 + 29.9), ReservationExpired) == []
    assert engine.reservation_count == 1
    expired = of_type(engine.expire(T0 + 30), ReservationExpired)
    assert [(e.reservation_id, dict(e.labels), e.estimate) for e in expired] == [
        (held.reservation_id, labels, tokens(100))
    ]
    assert engine.reservation_count == 0
    assert dim(engine, "users{user=u}", T0 + 30).reserved == 0
    result, _ = engine.commit(held.reservation_id, tokens(70), "c1", T0 + 40)
    assert result.late is True
    assert dim(engine, "users{user=u}", T0 + 40).used == 70
    with pytest.raises(NotFound):  # committed once: the expired hold is forgotten
        engine.commit(held.reservation_id, tokens(70), "c2", T0 + 41)


def test_release_of_an_expired_reservation_answers_not_released() -> None:
    """Releasing a hold that already expired succeeds with released=False."""
    engine = Engine([users(1000)])
    held, _ = engine.reserve({"user": "u"}, tokens(100), 30, "r1", T0)
    engine.expire(T0 + 31)
    result, _ = engine.release(held.reservation_id, "x1", T0 + 32)
    assert result.released is False
    assert dim(engine, "users{user=u}", T0 + 32).used == 0


def test_commit_of_an_unknown_reservation_is_not_found() -> None:
    """Committing an id the engine never granted raises NotFound naming it."""
    engine = Engine([users(1000)])
    with pytest.raises(NotFound) as raised:
        engine.commit("res-999", tokens(1), "c1", T0)
    assert (raised.value.kind, raised.value.name) == ("reservation", "res-999")


def test_consume_always_records_even_past_a_cap() -> None:
    """Consume records usage past a hard cap; only future reserves are denied."""
    engine = Engine([users(100)])
    engine.consume({"user": "u"}, tokens(80), "c1", T0)
    result, _ = engine.consume({"user": "u"}, tokens(80), "c2", T0 + 1)
    assert result.ledgers == (("users{user=u}", LedgerState.EXHAUSTED),)
    assert dim(engine, "users{user=u}", T0 + 1).used == 160
    denied, _ = engine.reserve({"user": "u"}, tokens(1), 60, "r1", T0 + 2)
    assert denied.decision is Decision.DENY


def test_an_exhausted_ledger_denies_even_a_zero_estimate() -> None:
    """A request needs one unit of headroom: at 100 % even an empty estimate is denied."""
    engine = Engine([users(100)])
    engine.consume({"user": "u"}, tokens(99), "c1", T0)
    assert engine.check({"user": "u"}, Usage(), T0).decision is not Decision.DENY
    engine.consume({"user": "u"}, tokens(1), "c2", T0)
    denied = engine.check({"user": "u"}, Usage(), T0)
    assert denied.decision is Decision.DENY
    assert [(b.requested, b.shortfall) for b in denied.blockers] == [(0, 0)]


def test_shadow_policy_never_changes_the_decision() -> None:
    """A shadow policy only reports: its ledger at 80 % or 100 % still answers ALLOW."""
    engine = Engine([users(100, enforcement="shadow")])
    engine.consume({"user": "u"}, tokens(80), "c1", T0)
    assert engine.get_ledger("users{user=u}", T0).state is LedgerState.WARNING
    assert engine.check({"user": "u"}, tokens(10), T0).decision is Decision.ALLOW
    held, _ = engine.reserve({"user": "u"}, tokens(10), 60, "r1", T0)
    assert held.decision is Decision.ALLOW
    engine.consume({"user": "u"}, tokens(20), "c2", T0)
    result, events = engine.reserve({"user": "u"}, tokens(10), 60, "r2", T0)
    assert [d.blocker.enforcement.value for d in of_type(events, Denied)] == ["shadow"]
    assert result.decision is Decision.ALLOW


def test_commit_after_its_policy_was_deleted_records_in_the_remaining_ledgers() -> None:
    """A hold whose ledger was closed since still commits into the ledgers that remain."""
    engine = Engine([users(1000), policy({"name": "global", "caps": {"total_tokens": 5000}})])
    held, _ = engine.reserve({"user": "u"}, tokens(100), 60, "r1", T0)
    engine.delete_policy("users", T0 + 1)
    result, _ = engine.commit(held.reservation_id, tokens(40), "c1", T0 + 2)
    assert [key for key, _ in result.ledgers] == ["global"]
    status = dim(engine, "global", T0 + 2)
    assert (status.used, status.reserved) == (40, 0)


# --- runs --------------------------------------------------------------------------------


def test_run_operations_on_unknown_or_ended_runs() -> None:
    """Heartbeat and close of an unknown or closed run are NotFound; reopening is a Conflict."""
    engine = Engine([policy({"name": "runs", "caps": {"concurrency": 5}})])
    with pytest.raises(NotFound):
        engine.heartbeat("nope", T0)
    engine.open_run({}, "r1", 60, "o1", T0)
    with pytest.raises(Conflict):
        engine.open_run({}, "r1", 60, "o2", T0 + 1)
    engine.close_run("r1", "x1", T0 + 2)
    with pytest.raises(NotFound):
        engine.heartbeat("r1", T0 + 3)
    with pytest.raises(NotFound):
        engine.close_run("r1", "x2", T0 + 3)
    assert engine.get_ledger("runs", T0 + 3).open_runs == 0


def test_list_runs_shows_open_runs_with_their_usage_in_pages() -> None:
    engine = Engine([policy({"name": "runs", "caps": {"concurrency": 5, "run_duration": "10m"}})])
    for name, user in (("r3", "bo"), ("r1", "ann"), ("r2", "ann")):
        engine.open_run({"user": user}, name, 60, f"o-{name}", T0)
    engine.consume({"user": "ann"}, Usage(input_tokens=40), "c1", T0 + 1, run_id="r1")
    engine.heartbeat("r1", T0 + 2)
    first = engine.list_runs(page_size=2)
    assert [run.run_id for run in first.runs] == ["r1", "r2"] and first.next_page_token
    run = first.runs[0]
    assert (run.opened_at, run.last_heartbeat, run.expires_at) == (T0, T0 + 2, T0 + 62)
    assert run.deadline == T0 + 600 and run.totals.input_tokens == 40
    rest = engine.list_runs(page_size=2, page_token=first.next_page_token)
    assert [r.run_id for r in rest.runs] == ["r3"] and rest.next_page_token == ""
    anns = engine.list_runs(selector={"user": "ann"})
    assert [r.run_id for r in anns.runs] == ["r1", "r2"]
    engine.close_run("r1", "k1", T0 + 3)
    assert [r.run_id for r in engine.list_runs().runs] == ["r2", "r3"]
    with pytest.raises(InvalidArgument, match="page_size"):
        engine.list_runs(page_size=0)


def test_soft_run_duration_cap_reports_once_and_keeps_warning() -> None:
    """Past a soft run_duration cap the run goes on: expire() reports it once, and usage
    estimated within the run is still answered with a warning, before and after the sweep."""
    engine = Engine(
        [policy({"name": "rt", "caps": {"run_duration": "30m"}, "enforcement": "soft"})]
    )
    opened, _ = engine.open_run({}, "r1", 600, "o1", T0)
    assert opened.deadline is None  # only a hard cap sets a deadline
    for beat in (T0 + 500, T0 + 1000, T0 + 1500):
        engine.heartbeat("r1", beat)
    before = engine.check({}, tokens(1), T0 + 1801, run_id="r1")
    assert before.decision is Decision.ALLOW_WITH_WARNING
    assert [w.dimension for w in before.warnings] == [Dimension.RUN_DURATION_MS]
    events = engine.expire(T0 + 1801)
    assert [d.blocker.dimension for d in of_type(events, Denied)] == [Dimension.RUN_DURATION_MS]
    assert of_type(events, RunEnded) == []
    assert of_type(engine.expire(T0 + 1802), Denied) == []
    assert engine.run_count == 1
    after = engine.check({}, tokens(1), T0 + 1803, run_id="r1")
    assert [w.dimension for w in after.warnings] == [Dimension.RUN_DURATION_MS]
    assert after.decision is Decision.ALLOW_WITH_WARNING


# --- idempotency -------------------------------------------------------------------------


def test_repeated_consume_returns_the_original_and_changes_nothing() -> None:
    """A retried consume answers replayed=True with the original result and no events."""
    engine = Engine([users(1000)])
    first, events = engine.consume({"user": "u"}, tokens(800), "c1", T0)
    assert first.replayed is False and len(events) > 0
    before = snapshot(engine, T0 + 1)
    again, events = engine.consume({"user": "u"}, tokens(800), "c1", T0 + 1)
    assert again == replace(first, replayed=True)
    assert events == []
    assert snapshot(engine, T0 + 1) == before
    with pytest.raises(Conflict, match="already used for a different consume request"):
        engine.consume({"user": "v"}, tokens(5), "c1", T0 + 1)  # same id, other args
    assert snapshot(engine, T0 + 1) == before


def test_repeated_reserve_commit_release_and_runs_change_nothing() -> None:
    """Retries of reserve, commit, release, open_run, close_run and reset are replays."""
    engine = Engine([users(1000), policy({"name": "runs", "caps": {"concurrency": 5}})])
    labels = {"user": "u"}
    held, _ = engine.reserve(labels, tokens(100), 60, "r1", T0)
    assert engine.reserve(labels, tokens(100), 60, "r1", T0)[0] == replace(held, replayed=True)
    assert engine.reservation_count == 1
    assert dim(engine, "users{user=u}", T0).reserved == 100
    committed, _ = engine.commit(held.reservation_id, tokens(90), "c1", T0 + 1)
    replayed, events = engine.commit(held.reservation_id, tokens(90), "c1", T0 + 2)
    assert (replayed, events) == (replace(committed, replayed=True), [])
    assert dim(engine, "users{user=u}", T0 + 2).used == 90
    second, _ = engine.reserve(labels, tokens(10), 60, "r2", T0 + 3)
    engine.release(second.reservation_id, "x1", T0 + 4)
    assert engine.release(second.reservation_id, "x1", T0 + 5)[0].replayed is True
    opened, _ = engine.open_run(labels, "run-1", 60, "o1", T0 + 6)
    assert engine.open_run(labels, "run-1", 60, "o1", T0 + 7)[0] == replace(opened, replayed=True)
    assert engine.get_ledger("runs", T0 + 7).open_runs == 1
    closed, _ = engine.close_run("run-1", "k1", T0 + 8)
    assert engine.close_run("run-1", "k1", T0 + 9)[0] == replace(closed, replayed=True)
    reset, _ = engine.reset_ledger("users{user=u}", "z1", T0 + 10)
    engine.consume(labels, tokens(5), "c2", T0 + 11)
    assert engine.reset_ledger("users{user=u}", "z1", T0 + 12)[0] == replace(reset, replayed=True)
    assert dim(engine, "users{user=u}", T0 + 12).used == 5


def test_request_id_reused_for_another_operation_is_a_conflict() -> None:
    """A request_id remembered for one operation cannot be reused by another one."""
    engine = Engine([users(1000)])
    engine.consume({"user": "u"}, tokens(10), "id-1", T0)
    held, _ = engine.reserve({"user": "u"}, tokens(10), 60, "id-2", T0)
    before = snapshot(engine, T0 + 1)
    with pytest.raises(Conflict):
        engine.reserve({"user": "u"}, tokens(10), 60, "id-1", T0 + 1)
    with pytest.raises(Conflict):
        engine.commit(held.reservation_id, tokens(10), "id-1", T0 + 1)
    with pytest.raises(Conflict):
        engine.open_run({"user": "u"}, "run-1", 60, "id-2", T0 + 1)
    with pytest.raises(Conflict):
        engine.consume({"user": "u"}, tokens(10), "id-2", T0 + 1)
    assert snapshot(engine, T0 + 1) == before


def test_idempotency_memory_is_bounded_by_count() -> None:
    """With room for 3 ids, the oldest is forgotten: its retry applies again."""
    engine = meter_engine(Limits(idempotency_max_entries=3))
    for i in range(1, 5):
        engine.consume({}, tokens(10), f"c{i}", T0 + i)
    assert engine.consume({}, tokens(10), "c4", T0 + 5)[0].replayed is True
    assert engine.consume({}, tokens(10), "c2", T0 + 5)[0].replayed is True
    assert engine.get_ledger("all", T0 + 5).totals.requests == 4
    assert engine.consume({}, tokens(10), "c1", T0 + 6)[0].replayed is False
    assert engine.get_ledger("all", T0 + 6).totals.requests == 5


def test_idempotency_memory_is_bounded_by_age() -> None:
    """expire() forgets ids older than idempotency_max_age_s (kept exactly at the bound)."""
    engine = meter_engine(Limits(idempotency_max_age_s=100))
    engine.consume({}, tokens(10), "c1", T0)
    engine.expire(T0 + 100)
    assert engine.consume({}, tokens(10), "c1", T0 + 100)[0].replayed is True
    engine.expire(T0 + 100.5)
    assert engine.consume({}, tokens(10), "c1", T0 + 101)[0].replayed is False
    assert engine.get_ledger("all", T0 + 101).totals.requests == 2


# --- request bounds ----------------------------------------------------------------------


def test_sixteen_labels_are_accepted_and_seventeen_rejected() -> None:
    """max_labels=16 is inclusive; the 17th label is InvalidArgument naming `labels`."""
    engine = meter_engine()
    sixteen = {f"k{i}": "v" for i in range(16)}
    engine.consume(sixteen, tokens(1), "c1", T0)
    seventeen = {**sixteen, "k16": "v"}
    calls: list[Callable[[], object]] = [
        lambda: engine.consume(seventeen, tokens(1), "c2", T0),
        lambda: engine.check(seventeen, tokens(1), T0),
        lambda: engine.reserve(seventeen, tokens(1), 60, "r1", T0),
        lambda: engine.open_run(seventeen, "run-1", 60, "o1", T0),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as raised:
            call()
        assert raised.value.field == "labels"
    assert engine.get_ledger("all", T0).totals.requests == 1


@pytest.mark.parametrize(
    "key", ["Upper", "with space", "", "a" * 65, "ключ", "a/b", "a:b", "a=b", "a,b"]
)
def test_label_keys_outside_the_pattern_are_rejected(key: str) -> None:
    """Label keys must match [a-z0-9_.-]{1,64}; the error names the key."""
    engine = meter_engine()
    with pytest.raises(InvalidArgument) as raised:
        engine.consume({key: "v"}, tokens(1), "c1", T0)
    assert raised.value.field == f"labels[{key!r}]"
    assert engine.ledger_count == 0


@pytest.mark.parametrize("key", ["a" * 64, "a.b-c_d0", "0", "..."])
def test_label_keys_inside_the_pattern_are_accepted(key: str) -> None:
    """Keys of 1..64 characters from [a-z0-9_.-] are accepted."""
    engine = meter_engine()
    result, _ = engine.consume({key: "v"}, tokens(1), "c1", T0)
    assert [k for k, _ in result.ledgers] == ["all"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a" * 256, True),
        ("a" * 257, False),
        ("é" * 128, True),  # 2 bytes each
        ("é" * 128 + "a", False),
        ("€" * 85 + "a", True),  # 3 bytes each: 256
        ("€" * 86, False),  # 258
        ("😀" * 64, True),  # 4 bytes each
        ("😀" * 64 + "a", False),
    ],
)
def test_label_value_is_bounded_in_utf8_bytes(value: str, ok: bool) -> None:
    """Label values are at most 256 UTF-8 bytes, whatever their character count."""
    engine = meter_engine()
    if ok:
        engine.consume({"k": value}, tokens(1), "c1", T0)
        assert engine.get_ledger("all", T0).totals.requests == 1
    else:
        with pytest.raises(InvalidArgument) as raised:
            engine.consume({"k": value}, tokens(1), "c1", T0)
        assert raised.value.field == "labels.k"
        assert engine.ledger_count == 0


@pytest.mark.parametrize("name", ["input_tokens", "output_tokens", "cached_input_tokens"])
def test_token_counts_are_bounded_at_ten_to_the_twelve(name: str) -> None:
    """10**12 tokens are accepted; 10**12 + 1 and negatives are rejected naming the field."""
    engine = meter_engine()
    big = 10**12
    base = Usage(input_tokens=big) if name == "cached_input_tokens" else Usage()
    engine.consume({}, with_field(base, name, big), "c1", T0)
    for i, bad in enumerate((big + 1, -1)):
        usage = with_field(base, name, bad)
        with pytest.raises(InvalidArgument) as raised:
            engine.consume({}, usage, f"c{i + 2}", T0)
        assert raised.value.field == f"usage.{name}"
        with pytest.raises(InvalidArgument) as raised:
            engine.reserve({}, usage, 60, f"r{i}", T0)
        assert raised.value.field == f"estimate.{name}"
        with pytest.raises(InvalidArgument) as raised:
            engine.check({}, usage, T0)
        assert raised.value.field == f"estimate.{name}"
    assert engine.get_ledger("all", T0).totals.requests == 1


def test_commit_validates_the_actual_usage() -> None:
    """Commit of an out-of-range actual names `actual.<field>` and keeps the hold."""
    engine = meter_engine()
    held, _ = engine.reserve({}, tokens(1), 60, "r1", T0)
    with pytest.raises(InvalidArgument) as raised:
        engine.commit(held.reservation_id, Usage(output_tokens=10**12 + 1), "c1", T0)
    assert raised.value.field == "actual.output_tokens"
    assert engine.reservation_count == 1


def test_cached_input_tokens_may_not_exceed_input_tokens() -> None:
    """cached_input_tokens is a part of input_tokens: equal is fine, larger is rejected."""
    engine = meter_engine()
    engine.consume({}, Usage(input_tokens=10, cached_input_tokens=10), "c1", T0)
    with pytest.raises(InvalidArgument) as raised:
        engine.consume({}, Usage(input_tokens=10, cached_input_tokens=11), "c2", T0)
    assert raised.value.field == "usage.cached_input_tokens"
    assert engine.get_ledger("all", T0).totals.cached_input_tokens == 10


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        (Usage(cost_micro_usd=-1), "usage.cost_micro_usd"),
        (Usage(cost_micro_usd=10**15 + 1), "usage.cost_micro_usd"),
        (Usage(latency_us=86_400_000_001), "usage.latency_us"),
        (Usage(latency_us=-1), "usage.latency_us"),
        (Usage(model="m" * 257), "usage.model"),
        (Usage(provider="p" * 257), "usage.provider"),
    ],
)
def test_other_usage_fields_are_bounded(usage: Usage, field: str) -> None:
    """Cost, latency, model and provider out of range are rejected naming the field."""
    engine = meter_engine()
    with pytest.raises(InvalidArgument) as raised:
        engine.consume({}, usage, "c1", T0)
    assert raised.value.field == field
    edge = Usage(cost_micro_usd=10**15, latency_us=86_400_000_000, model="m" * 256)
    engine.consume({}, edge, "c2", T0)
    assert engine.get_ledger("all", T0).totals.cost_micro_usd == 10**15


@pytest.mark.parametrize("request_id", ["", "a" * 129, "has space", "tab\t", "ré", "nul\x00"])
def test_bad_request_ids_are_rejected(request_id: str) -> None:
    """Ids are 1..128 printable ASCII characters without spaces."""
    engine = meter_engine()
    with pytest.raises(InvalidArgument) as raised:
        engine.consume({}, tokens(1), request_id, T0)
    assert raised.value.field == "request_id"
    with pytest.raises(InvalidArgument) as raised:
        engine.open_run({}, request_id, 60, "o1", T0)
    assert raised.value.field == "run_id"
    with pytest.raises(InvalidArgument) as raised:
        engine.commit(request_id, tokens(1), "c1", T0)
    assert raised.value.field == "reservation_id"
    assert engine.ledger_count == 0 and engine.run_count == 0


@pytest.mark.parametrize("request_id", ["a" * 128, "req-1:retry/2", "~!@#$%^&*()"])
def test_good_request_ids_are_accepted(request_id: str) -> None:
    """128 characters and any printable ASCII punctuation are fine."""
    engine = meter_engine()
    result, _ = engine.consume({}, tokens(1), request_id, T0)
    assert result.replayed is False
    assert engine.consume({}, tokens(1), request_id, T0)[0].replayed is True


@pytest.mark.parametrize("ttl", [0.0, -1.0, 3600.001, float("nan"), float("inf")])
def test_ttl_outside_bounds_is_rejected(ttl: float) -> None:
    """Reservation and run ttls must be in (0, 3600] seconds."""
    engine = meter_engine()
    with pytest.raises(InvalidArgument) as raised:
        engine.reserve({}, tokens(1), ttl, "r1", T0)
    assert raised.value.field == "ttl"
    with pytest.raises(InvalidArgument) as raised:
        engine.open_run({}, "run-1", ttl, "o1", T0)
    assert raised.value.field == "ttl"
    assert (engine.reservation_count, engine.run_count) == (0, 0)


def test_ttl_at_its_bounds_is_accepted() -> None:
    """The maximum ttl itself and a tiny positive ttl are both accepted."""
    engine = meter_engine(Limits(max_reservation_ttl_s=10, max_run_ttl_s=20))
    assert engine.reserve({}, tokens(1), 10, "r1", T0)[0].expires_at == T0 + 10
    assert engine.reserve({}, tokens(1), 0.001, "r2", T0)[0].expires_at == T0 + 0.001
    with pytest.raises(InvalidArgument):
        engine.reserve({}, tokens(1), 10.5, "r3", T0)
    assert engine.open_run({}, "run-1", 20, "o1", T0)[0].expires_at == T0 + 20
    with pytest.raises(InvalidArgument):
        engine.open_run({}, "run-2", 20.5, "o2", T0)


# --- capacity bounds ---------------------------------------------------------------------


def test_max_reservations_is_limit_reached() -> None:
    """Past max_reservations a reserve raises LimitReached until a hold is released."""
    engine = meter_engine(Limits(max_reservations=2))
    first, _ = engine.reserve({}, tokens(1), 60, "r1", T0)
    engine.reserve({}, tokens(1), 60, "r2", T0)
    with pytest.raises(LimitReached) as raised:
        engine.reserve({}, tokens(1), 60, "r3", T0)
    assert (raised.value.limit, raised.value.value) == ("max_reservations", 2)
    assert engine.reservation_count == 2
    engine.release(first.reservation_id, "x1", T0 + 1)
    assert engine.reserve({}, tokens(1), 60, "r3", T0 + 1)[0].decision is Decision.ALLOW


def test_max_runs_is_limit_reached() -> None:
    """Past max_runs an open_run raises LimitReached until a run closes."""
    engine = meter_engine(Limits(max_runs=2))
    engine.open_run({}, "run-1", 60, "o1", T0)
    engine.open_run({}, "run-2", 60, "o2", T0)
    with pytest.raises(LimitReached) as raised:
        engine.open_run({}, "run-3", 60, "o3", T0)
    assert (raised.value.limit, raised.value.value) == ("max_runs", 2)
    assert engine.run_count == 2
    engine.close_run("run-1", "k1", T0 + 1)
    assert engine.open_run({}, "run-3", 60, "o4", T0 + 1)[0].decision is Decision.ALLOW


def test_max_policies_is_limit_reached_for_new_policies_only() -> None:
    """Adding a policy past max_policies fails; replacing an existing one does not."""
    engine = Engine([policy({"name": "a"}), policy({"name": "b"})], limits=Limits(max_policies=2))
    with pytest.raises(LimitReached) as raised:
        engine.put_policy(policy({"name": "c"}), T0)
    assert raised.value.limit == "max_policies"
    assert [p.name for p in engine.policies] == ["a", "b"]
    result, _ = engine.put_policy(policy({"name": "b", "caps": {"requests": 5}}), T0)
    assert result.created is False
    engine.delete_policy("a", T0)
    assert engine.put_policy(policy({"name": "c"}), T0)[0].created is True


def test_max_ledgers_evicts_the_least_recently_used_idle_ledger() -> None:
    """A full engine evicts the LRU idle ledger of an evictable policy, with its totals."""
    engine = Engine([users(None)], limits=Limits(max_ledgers=3))
    engine.consume({"user": "a"}, tokens(10), "c1", T0)
    engine.consume({"user": "b"}, tokens(20), "c2", T0 + 1)
    engine.consume({"user": "c"}, tokens(30), "c3", T0 + 2)
    engine.consume({"user": "a"}, tokens(10), "c4", T0 + 3)
    _, events = engine.consume({"user": "d"}, tokens(40), "c5", T0 + 4)
    closed = of_type(events, LedgerClosed)
    assert [(e.ledger, e.reason) for e in closed] == [("users{user=b}", LedgerClosedReason.EVICTED)]
    assert (closed[0].totals.total_tokens, closed[0].totals.requests) == (20, 1)
    assert engine.ledger_count == 3
    with pytest.raises(NotFound):
        engine.get_ledger("users{user=b}", T0 + 4)
    for key in ("users{user=a}", "users{user=c}", "users{user=d}"):
        engine.get_ledger(key, T0 + 4)


def test_eviction_skips_ledgers_that_hold_a_reservation_or_a_run() -> None:
    """A ledger with a hold or an open run is busy and never evicted, however old."""
    engine = Engine([users(None)], limits=Limits(max_ledgers=3))
    engine.reserve({"user": "a"}, tokens(10), 60, "r1", T0)
    engine.open_run({"user": "b"}, "run-1", 60, "o1", T0 + 1)
    engine.consume({"user": "c"}, tokens(10), "c1", T0 + 2)
    _, events = engine.consume({"user": "d"}, tokens(10), "c2", T0 + 3)
    assert [e.ledger for e in of_type(events, LedgerClosed)] == ["users{user=c}"]
    engine.reserve({"user": "d"}, tokens(1), 60, "r2", T0 + 4)
    before = snapshot(engine, T0 + 5)
    with pytest.raises(LimitReached):
        engine.consume({"user": "e"}, tokens(1), "c3", T0 + 5)
    assert snapshot(engine, T0 + 5) == before
    assert [s.key for s in before[0]] == ["users{user=a}", "users{user=b}", "users{user=d}"]


def test_max_ledgers_with_only_busy_ledgers_is_limit_reached() -> None:
    """When every ledger is busy, a new ledger is LimitReached and nothing changes."""
    engine = Engine([users(None)], limits=Limits(max_ledgers=2))
    engine.reserve({"user": "a"}, tokens(10), 60, "r1", T0)
    engine.reserve({"user": "b"}, tokens(10), 60, "r2", T0)
    before = snapshot(engine, T0 + 1)
    with pytest.raises(LimitReached) as raised:
        engine.consume({"user": "c"}, tokens(1), "c1", T0 + 1)
    assert raised.value.limit == "max_ledgers"
    assert snapshot(engine, T0 + 1) == before


def test_max_ledgers_with_non_evictable_policies_is_limit_reached() -> None:
    """Ledgers of non-evictable policies are never evicted: LimitReached, nothing changed."""
    engine = Engine([users(None, evictable=False)], limits=Limits(max_ledgers=2))
    engine.consume({"user": "a"}, tokens(10), "c1", T0)
    engine.consume({"user": "b"}, tokens(10), "c2", T0 + 1)
    before = snapshot(engine, T0 + 2)
    with pytest.raises(LimitReached) as raised:
        engine.consume({"user": "c"}, tokens(1), "c3", T0 + 2)
    assert raised.value.limit == "max_ledgers"
    assert snapshot(engine, T0 + 2) == before
    with pytest.raises(NotFound):
        engine.get_ledger("users{user=c}", T0 + 2)


def test_failed_operations_change_nothing() -> None:
    """Every failing operation leaves every ledger, hold and run exactly as it was."""
    engine = Engine(
        [
            policy({"name": "global", "caps": {"total_tokens": 1000}, "evictable": False}),
            users(500, evictable=False),
        ],
        limits=Limits(max_ledgers=3),
    )
    engine.consume({"user": "a"}, tokens(100), "c1", T0)
    held, _ = engine.reserve({"user": "b"}, tokens(50), 60, "r1", T0)
    before = snapshot(engine, T0 + 1)
    failing: list[Callable[[], object]] = [
        lambda: engine.consume({"user": "c"}, tokens(1), "c2", T0 + 1),  # LimitReached
        lambda: engine.reserve({"user": "c"}, tokens(1), 60, "r2", T0 + 1),
        lambda: engine.open_run({"user": "c"}, "run-1", 60, "o1", T0 + 1),
        lambda: engine.reserve({"user": "a"}, tokens(1), 0, "r3", T0 + 1),  # InvalidArgument
        lambda: engine.consume({"user": "a"}, Usage(input_tokens=-1), "c3", T0 + 1),
        lambda: engine.commit("res-404", tokens(1), "c4", T0 + 1),  # NotFound
        lambda: engine.reserve({"user": "a"}, tokens(1), 60, "c1", T0 + 1),  # Conflict
        lambda: engine.commit(held.reservation_id, tokens(1), "r1", T0 + 1),  # Conflict
        lambda: engine.reset_ledger("users{user=zz}", "z1", T0 + 1),  # NotFound
        lambda: engine.set_ledger_limits("users", [], T0 + 1),  # InvalidArgument
    ]
    for call in failing:
        with pytest.raises((LimitReached, InvalidArgument, NotFound, Conflict)):
            call()
        assert snapshot(engine, T0 + 1) == before


# --- administration ----------------------------------------------------------------------


def test_set_ledger_limits_overrides_one_ledger_and_an_empty_list_reverts() -> None:
    """An override applies to one ledger, survives apply_to_existing, and [] reverts it."""
    engine = Engine([users(1000)])
    engine.consume({"user": "a"}, tokens(100), "c1", T0)
    engine.consume({"user": "b"}, tokens(100), "c2", T0)
    status, events = engine.set_ledger_limits("users{user=a}", [(TOTAL, 50)], T0 + 1)
    assert [(d.dimension, d.limit) for d in status.dimensions] == [(TOTAL, 50)]
    assert status.state is LedgerState.EXHAUSTED
    assert [c.percent for c in of_type(events, ThresholdCrossed)] == [75, 90, 95]
    assert dim(engine, "users{user=b}", T0 + 1).limit == 1000
    assert engine.check({"user": "a"}, tokens(1), T0 + 1).decision is Decision.DENY
    engine.put_policy(users(2000), T0 + 2, apply_to_existing=True)
    assert dim(engine, "users{user=a}", T0 + 2).limit == 50
    assert dim(engine, "users{user=b}", T0 + 2).limit == 2000
    reverted, _ = engine.set_ledger_limits("users{user=a}", [], T0 + 3)
    assert [(d.dimension, d.limit) for d in reverted.dimensions] == [(TOTAL, 2000)]
    assert reverted.state is LedgerState.OK


def test_set_ledger_limits_needs_an_existing_ledger_and_validates() -> None:
    """As the contract says: a ledger that does not exist is NOT_FOUND (nothing is
    created); bad caps and keys fail first."""
    engine = Engine([users(1000)])
    with pytest.raises(NotFound):
        engine.set_ledger_limits("users{user=new}", [(TOTAL, 7)], T0)
    assert engine.ledger_count == 0
    engine.consume({"user": "new"}, tokens(1), "c", T0)
    status, _ = engine.set_ledger_limits("users{user=new}", [(TOTAL, 7)], T0)
    assert (status.key, status.dimensions[0].limit) == ("users{user=new}", 7)
    assert engine.get_ledger("users{user=new}", T0).labels == {"user": "new"}
    with pytest.raises(InvalidArgument) as raised:
        engine.set_ledger_limits("users{user=new}", [(TOTAL, -1)], T0)
    assert raised.value.field.endswith("caps.total_tokens")
    with pytest.raises(InvalidArgument) as raised:
        engine.set_ledger_limits("users{agent=x}", [], T0)
    assert raised.value.field == "key"
    with pytest.raises(NotFound):
        engine.set_ledger_limits("nope{user=x}", [], T0)
    assert dim(engine, "users{user=new}", T0).limit == 7


def test_reset_ledger_returns_final_totals_zeroes_the_window_and_keeps_holds() -> None:
    """Reset reports the final totals, zeroes usage, re-arms thresholds and keeps holds."""
    engine = Engine([users(1000)])
    labels = {"user": "u"}
    engine.consume(labels, tokens(800), "c1", T0)
    held, _ = engine.reserve(labels, tokens(100), 60, "r1", T0)
    result, events = engine.reset_ledger("users{user=u}", "z1", T0 + 1)
    assert result.final.totals.total_tokens == 800
    assert result.final.dimensions[0].reserved == 100
    closed = of_type(events, LedgerClosed)
    assert [(e.reason, e.totals.total_tokens) for e in closed] == [(LedgerClosedReason.RESET, 800)]
    status = engine.get_ledger("users{user=u}", T0 + 1)
    assert (status.totals.total_tokens, status.totals.requests) == (0, 0)
    assert (status.dimensions[0].reserved, status.reservations) == (100, 1)
    assert status.state is LedgerState.OK
    again, _ = engine.consume(labels, tokens(800), "c2", T0 + 2)
    assert [c.percent for c in again.crossings] == [75]
    engine.commit(held.reservation_id, tokens(100), "c3", T0 + 3)
    assert dim(engine, "users{user=u}", T0 + 3).used == 900
    with pytest.raises(NotFound):
        engine.reset_ledger("users{user=nobody}", "z2", T0 + 4)


def test_delete_policy_closes_its_ledgers_with_final_totals() -> None:
    """Deleting a policy closes each of its ledgers with a POLICY_DELETED event."""
    engine = Engine([users(1000), policy({"name": "all"})])
    engine.consume({"user": "a"}, tokens(10), "c1", T0)
    engine.consume({"user": "b"}, tokens(20), "c2", T0)
    result, events = engine.delete_policy("users", T0 + 1)
    assert sorted((s.key, s.totals.total_tokens) for s in result.closed_ledgers) == [
        ("users{user=a}", 10),
        ("users{user=b}", 20),
    ]
    closed = of_type(events, LedgerClosed)
    assert sorted((e.ledger, e.reason, e.totals.total_tokens) for e in closed) == [
        ("users{user=a}", LedgerClosedReason.POLICY_DELETED, 10),
        ("users{user=b}", LedgerClosedReason.POLICY_DELETED, 20),
    ]
    assert [(e.name, e.deleted) for e in of_type(events, PolicyChanged)] == [("users", True)]
    with pytest.raises(NotFound):
        engine.get_ledger("users{user=a}", T0 + 1)
    with pytest.raises(NotFound):
        engine.policy("users")
    with pytest.raises(NotFound):
        engine.delete_policy("users", T0 + 2)
    assert engine.get_ledger("all", T0 + 1).totals.total_tokens == 30


@pytest.mark.parametrize(
    "change",
    [{"per": ["agent"]}, {"window": {"kind": "calendar", "unit": "day"}}, {"match": {"t": "x"}}],
)
def test_put_policy_changing_match_per_or_window_closes_existing_ledgers(
    change: dict[str, Any],
) -> None:
    """A reshaped policy closes its ledgers with POLICY_CHANGED events and their totals."""
    engine = Engine([users(1000)])
    engine.consume({"user": "a", "agent": "x"}, tokens(10), "c1", T0)
    engine.consume({"user": "b", "agent": "x"}, tokens(20), "c2", T0)
    reshaped = policy({**users(1000).to_mapping(), **change})
    result, events = engine.put_policy(reshaped, T0 + 1)
    assert (result.created, result.closed_ledgers) == (False, 2)
    closed = of_type(events, LedgerClosed)
    assert sorted((e.ledger, e.reason, e.totals.total_tokens) for e in closed) == [
        ("users{user=a}", LedgerClosedReason.POLICY_CHANGED, 10),
        ("users{user=b}", LedgerClosedReason.POLICY_CHANGED, 20),
    ]
    assert engine.ledger_count == 0


def test_put_policy_changing_only_caps_keeps_existing_ledgers() -> None:
    """A cap change closes nothing and, by default, leaves existing caps alone."""
    engine = Engine([users(1000)])
    engine.consume({"user": "a"}, tokens(10), "c1", T0)
    result, events = engine.put_policy(users(20), T0 + 1)
    assert (result.created, result.closed_ledgers) == (False, 0)
    assert of_type(events, LedgerClosed) == []
    assert [(e.name, e.deleted) for e in of_type(events, PolicyChanged)] == [("users", False)]
    assert dim(engine, "users{user=a}", T0 + 1).limit == 1000


# --- listing -----------------------------------------------------------------------------


def test_list_ledgers_filters_by_policy_selector_and_min_state() -> None:
    """Each filter narrows the listing to exactly the ledgers it names."""
    engine = Engine([users(100), policy({"name": "agents", "per": ["agent"]})])
    engine.consume({"user": "a", "agent": "x"}, tokens(80), "c1", T0)
    engine.consume({"user": "b", "agent": "x"}, tokens(10), "c2", T0)
    engine.consume({"user": "c", "agent": "y"}, tokens(100), "c3", T0)

    def keys(**filters: Any) -> list[str]:
        return [s.key for s in engine.list_ledgers(T0 + 1, **filters).ledgers]

    assert keys(policy="users") == ["users{user=a}", "users{user=b}", "users{user=c}"]
    assert keys(policy="agents") == ["agents{agent=x}", "agents{agent=y}"]
    assert keys(selector={"agent": "x"}) == ["agents{agent=x}"]
    assert keys(selector={"user": "a"}) == ["users{user=a}"]
    assert keys(min_state=LedgerState.WARNING) == ["users{user=a}", "users{user=c}"]
    assert keys(min_state=LedgerState.EXHAUSTED) == ["users{user=c}"]
    assert keys(policy="agents", min_state=LedgerState.WARNING) == []
    assert keys(policy="nope") == []


@pytest.mark.parametrize("policy_filter", ["", "users"])
def test_list_ledgers_pages_return_each_ledger_exactly_once(policy_filter: str) -> None:
    """page_size=2 over 5 matching ledgers yields pages of 2, 2, 1 and no duplicates."""
    engine = Engine([users(None), policy({"name": "agents", "per": ["agent"]})])
    for i in range(5):
        labels = {"user": f"u{i}"} if policy_filter == "" else {"user": f"u{i}", "agent": f"a{i}"}
        engine.consume(labels, tokens(1), f"c{i}", T0 + i)
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    for _ in range(10):
        page = engine.list_ledgers(T0 + 10, policy=policy_filter, page_size=2, page_token=token)
        seen.extend(s.key for s in page.ledgers)
        sizes.append(len(page.ledgers))
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == [f"users{{user=u{i}}}" for i in range(5)]
    assert len(seen) == len(set(seen)) == 5
    assert sizes[:3] == [2, 2, 1]
    assert token == ""


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"page_token": "abc"}, "page_token"),
        ({"page_token": "-1"}, "page_token"),
        ({"page_token": "1" * 21}, "page_token"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"selector": {"Bad": "x"}}, "selector['Bad']"),
    ],
)
def test_list_ledgers_rejects_bad_arguments(kwargs: dict[str, Any], field: str) -> None:
    """A page token the server never returned, or a bad page size, is InvalidArgument."""
    engine = meter_engine()
    engine.consume({}, tokens(1), "c1", T0)
    with pytest.raises(InvalidArgument) as raised:
        engine.list_ledgers(T0, **kwargs)
    assert raised.value.field == field


# --- windows and the sweep ---------------------------------------------------------------


def test_sliding_window_ages_usage_out_and_rearms_thresholds() -> None:
    """Usage leaves a 60 s sliding window 60 s after it happened; thresholds fire again."""
    engine = Engine(
        [
            policy(
                {
                    "name": "tpm",
                    "caps": {"total_tokens": 100},
                    "window": {"kind": "sliding", "duration": "60s"},
                }
            )
        ]
    )
    first, _ = engine.consume({}, tokens(80), "c1", T0)
    assert [c.percent for c in first.crossings] == [75]
    second, _ = engine.consume({}, tokens(10), "c2", T0 + 30)
    assert [c.percent for c in second.crossings] == [90]
    assert engine.check({}, tokens(20), T0 + 30).decision is Decision.DENY
    assert dim(engine, "tpm", T0 + 59.5).used == 90
    assert dim(engine, "tpm", T0 + 60).used == 10
    assert engine.check({}, tokens(20), T0 + 60).decision is Decision.ALLOW
    third, _ = engine.consume({}, tokens(70), "c3", T0 + 61)
    assert [c.percent for c in third.crossings] == [75]
    assert dim(engine, "tpm", T0 + 61).used == 80
    assert dim(engine, "tpm", T0 + 95).used == 70


def test_fixed_window_is_anchored_at_first_use() -> None:
    """A 30-day fixed window starts at each ledger's first use and rolls 30 days later."""
    thirty_days = 30 * DAY
    engine = Engine(
        [
            users(
                1000,
                window={"kind": "fixed", "duration": "30d"},
            )
        ]
    )
    engine.consume({"user": "a"}, tokens(100), "c1", T0 + 5)
    engine.consume({"user": "b"}, tokens(100), "c2", T0 + 1000)
    status = engine.get_ledger("users{user=a}", T0 + 5)
    assert (status.window_start, status.window_end) == (T0 + 5, T0 + 5 + thirty_days)
    other = engine.get_ledger("users{user=b}", T0 + 1000)
    assert (other.window_start, other.window_end) == (T0 + 1000, T0 + 1000 + thirty_days)
    _, events = engine.consume({"user": "a"}, tokens(50), "c3", T0 + 5 + thirty_days - 1)
    assert of_type(events, WindowRolledOver) == []
    _, events = engine.consume({"user": "a"}, tokens(7), "c4", T0 + 5 + thirty_days)
    rolled = of_type(events, WindowRolledOver)
    assert [(r.window_start, r.window_end, r.totals.total_tokens) for r in rolled] == [
        (T0 + 5, T0 + 5 + thirty_days, 150)
    ]
    status = engine.get_ledger("users{user=a}", T0 + 5 + thirty_days)
    assert status.window_start == T0 + 5 + thirty_days
    assert status.totals.total_tokens == 7


def test_sweep_is_bounded_by_sweep_batch() -> None:
    """expire() handles at most sweep_batch due holds per call; the next call continues."""
    engine = meter_engine(Limits(sweep_batch=2))
    for i in range(5):
        engine.reserve({}, tokens(1), 10, f"r{i}", T0)
    counts = []
    for _ in range(4):
        counts.append(len(of_type(engine.expire(T0 + 10), ReservationExpired)))
    assert counts == [2, 2, 1, 0]
    assert engine.reservation_count == 0


def rate_engine(unit: str) -> Engine:
    window = {"kind": "calendar", "unit": unit, "time_zone": "America/New_York"}
    return Engine([policy({"name": "rate", "caps": {"total_tokens": 100}, "window": window})])


@pytest.mark.parametrize(
    ("day", "hours"),
    [((2024, 3, 10), 23), ((2024, 11, 3), 25), ((2024, 6, 1), 24)],
)
def test_calendar_day_follows_dst(day: tuple[int, int, int], hours: int) -> None:
    """A New York day lasts 23 h when clocks spring forward and 25 h when they fall back."""
    engine = rate_engine("day")
    noon = datetime(*day, 12, tzinfo=NEW_YORK).timestamp()
    engine.consume({}, tokens(1), "c1", noon)
    status = engine.get_ledger("rate", noon)
    assert status.window_start == datetime(*day, tzinfo=NEW_YORK).timestamp()
    assert status.window_end is not None
    assert status.window_end - status.window_start == hours * 3600


@pytest.mark.parametrize(("unit", "length"), [("minute", 60), ("hour", 3600)])
def test_calendar_minute_and_hour_keep_their_length_in_the_repeated_dst_hour(
    unit: str, length: int
) -> None:
    """In the repeated hour of a fall-back night each local minute or hour window still
    lasts one minute or hour, contains now, and keeps counting until it ends."""
    for fold in (0, 1):
        engine = rate_engine(unit)
        now = datetime(2024, 11, 3, 1, 30, 10, fold=fold, tzinfo=NEW_YORK).timestamp()
        engine.consume({}, tokens(100), "c1", now)
        status = engine.get_ledger("rate", now)
        assert status.window_end is not None
        assert status.window_start <= now < status.window_end, f"fold={fold}"
        assert status.window_end - status.window_start == length, f"fold={fold}"
        assert engine.check({}, tokens(1), now + 5).decision is Decision.DENY, f"fold={fold}"


# --- the hot path's memo of label sets and its bookkeeping ------------------------------


def test_a_label_set_seen_before_reaches_a_policy_added_since() -> None:
    engine = Engine([users(None)])
    engine.consume({"user": "u"}, tokens(10), "c1", T0)
    engine.put_policy(policy({"name": "all"}), T0)
    engine.consume({"user": "u"}, tokens(5), "c2", T0)
    assert engine.get_ledger("users{user=u}", T0).totals.total_tokens == 15
    assert engine.get_ledger("all", T0).totals.total_tokens == 5


def test_a_label_set_seen_before_gets_a_new_ledger_after_its_ledger_was_evicted() -> None:
    engine = Engine([users(None)], limits=Limits(max_ledgers=1))
    engine.consume({"user": "a"}, tokens(10), "c1", T0)
    _, events = engine.consume({"user": "b"}, tokens(1), "c2", T0 + 1)  # evicts user a
    assert [e.ledger for e in of_type(events, LedgerClosed)] == ["users{user=a}"]
    engine.consume({"user": "a"}, tokens(7), "c3", T0 + 2)
    assert engine.get_ledger("users{user=a}", T0 + 2).totals.total_tokens == 7


def test_labels_changed_by_the_caller_after_a_call_change_nothing_recorded() -> None:
    engine = Engine([users(None)])
    labels = {"user": "a"}
    _, first = engine.consume(labels, tokens(10), "c1", T0)
    labels["user"] = "b"
    engine.consume(labels, tokens(3), "c2", T0)
    assert of_type(first, UsageRecorded)[0].labels == {"user": "a"}
    assert engine.get_ledger("users{user=a}", T0).totals.total_tokens == 10
    assert engine.get_ledger("users{user=b}", T0).totals.total_tokens == 3


def test_the_label_set_memo_is_bounded_and_answers_alike_past_its_bound() -> None:
    engine = Engine([users(None)], limits=Limits(route_memo_entries=2))
    for i in range(30):
        engine.consume({"user": f"u{i % 5}"}, tokens(1), f"c{i}", T0)
        assert len(engine._routes) <= 2
    for u in range(5):
        assert engine.get_ledger(f"users{{user=u{u}}}", T0).totals.total_tokens == 6


def test_invalid_labels_are_rejected_every_time_not_only_the_first() -> None:
    engine = Engine([users(None)])
    for request_id in ("c1", "c2"):
        with pytest.raises(InvalidArgument) as raised:
            engine.consume({"User": "u"}, tokens(1), request_id, T0)
        assert raised.value.field == "labels['User']"
    assert engine.ledger_count == 0


def test_the_expiry_heap_stays_bounded_by_the_holds_open() -> None:
    engine = Engine([users(None)])
    for i in range(5000):
        held, _ = engine.reserve({"user": "u"}, tokens(1), 3600, f"r{i}", T0)
        engine.commit(held.reservation_id, tokens(1), f"k{i}", T0)
    assert len(engine._reservation_heap) <= 2 * engine.reservation_count + 1025
    assert engine.get_ledger("users{user=u}", T0).totals.total_tokens == 5000


def test_an_actual_usage_without_a_model_is_the_estimates_model() -> None:
    engine = Engine([policy({"name": "models", "per": ["model"]})])
    held, _ = engine.reserve({}, Usage(1_000_000, 0, model="gpt-4o"), 60, "r1", T0)
    result, _ = engine.commit(held.reservation_id, Usage(1_000_000, 0), "k1", T0)
    assert result.cost_micro_usd == engine.prices.cost_of(Usage(1_000_000, 0, model="gpt-4o"))
    assert result.cost_micro_usd is not None
    assert engine.get_ledger("models{model=gpt-4o}", T0).totals.requests == 1


@pytest.mark.parametrize("seen_before", [False, True])
def test_bad_labels_are_named_before_any_other_rule_or_limit(seen_before: bool) -> None:
    engine = Engine([users(None)], limits=Limits(max_reservations=1))
    if seen_before:  # a valid label set in the memo changes nothing for an invalid one
        engine.consume({"user": "u"}, tokens(1), "c0", T0)
    engine.reserve({"user": "u"}, tokens(1), 60, "r0", T0)  # the server is now full
    bad = {"User": "u"}
    calls: list[Callable[[], object]] = [
        lambda: engine.reserve(bad, tokens(1), 60, "r1", T0),
        lambda: engine.reserve(bad, Usage(input_tokens=-1), 0, "r2", T0),
        lambda: engine.consume(bad, Usage(input_tokens=-1), "c1", T0, run_id="bad id"),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as raised:
            call()
        assert raised.value.field == "labels['User']"


def test_a_restored_hold_made_before_a_policy_change_commits_like_the_original() -> None:
    engine = Engine([policy({"name": "all"})])
    held, _ = engine.reserve({"user": "u"}, tokens(10), 60, "r1", T0)
    engine.put_policy(users(None), T0)
    restored = Engine.from_state(engine.export_state())
    for each in (engine, restored):
        each.commit(held.reservation_id, tokens(10), "k1", T0 + 1)
    assert restored.export_state() == engine.export_state()
    assert restored.get_ledger("users{user=u}", T0 + 1).totals.total_tokens == 10


# ---------------------------------------------------------------------------------------
# Remembered statuses (Engine._status): the same object while nothing changed
# ---------------------------------------------------------------------------------------


def test_a_status_is_the_same_object_until_the_ledger_or_its_window_changes() -> None:
    engine = Engine([users(window={"kind": "fixed", "duration": "1h"})])
    engine.consume({"user": "u"}, tokens(10), "c-1", T0)
    first = engine.get_ledger("users{user=u}", T0 + 1)
    assert engine.get_ledger("users{user=u}", T0 + 2) is first  # nothing changed
    (checked,) = engine.check({"user": "u"}, tokens(1), T0 + 3).ledgers
    assert checked is first
    engine.consume({"user": "u"}, tokens(5), "c-2", T0 + 4)
    after = engine.get_ledger("users{user=u}", T0 + 5)
    assert after is not first and after.totals.total_tokens == 15
    engine.reserve({"user": "u"}, tokens(1), 60, "r-1", T0 + 6)
    held = engine.get_ledger("users{user=u}", T0 + 7)
    assert held is not after and held.reservations == 1
    rolled = engine.get_ledger("users{user=u}", T0 + 3600)  # the window ended
    assert rolled is not held and rolled.totals.total_tokens == 0


def test_a_wall_clock_ledgers_status_is_built_afresh_each_time() -> None:
    timed = policy(
        {
            "name": "timed",
            "per": ["user"],
            "caps": {"wall_clock_ms": 3_600_000},
            "window": {"kind": "fixed", "duration": "2h"},
        }
    )
    engine = Engine([timed])
    engine.consume({"user": "u"}, tokens(1), "c-1", T0)
    first = engine.get_ledger("timed{user=u}", T0 + 10)
    later = engine.get_ledger("timed{user=u}", T0 + 20)
    assert later is not first
    elapsed = [
        next(d.used for d in status.dimensions if d.dimension is Dimension.WALL_CLOCK_MS)
        for status in (first, later)
    ]
    assert elapsed[1] > elapsed[0]
