"""Money that is right and answers that say what to do next, in the core.

Goal: an unpriced estimate never slips past a cost cap; a reused request_id with other
arguments is refused, before and after a snapshot; blockers and dimensions say when the
blocking amount comes back; threshold events carry what is left; every event about a
ledger carries the ledger's labels (match labels included); wall-clock caps, `missing`
defaults and idle ttls behave as the contract says; latency keeps microseconds and
calendar edges are exact. Method: a `budgetd.core.Engine` driven with explicit instants.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from budgetd.core import (
    Conflict,
    Decision,
    Dimension,
    Engine,
    InvalidArgument,
    LedgerClosed,
    LedgerClosedReason,
    LedgerExhausted,
    Policy,
    ThresholdCrossed,
    Usage,
    WindowRolledOver,
)
from budgetd.core.policy import CalendarUnit
from budgetd.core.windows import calendar_bounds

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = 86_400
COST = Dimension.COST_MICRO_USD
UNKNOWN = "no-such-model-7"
E = TypeVar("E")


def of_type(events: Iterable[object], kind: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, kind)]


def policy(data: Mapping[str, Any]) -> Policy:
    return Policy.from_mapping(data)


def spend(usd: str, **extra: Any) -> Policy:
    return policy({"name": "spend", "per": ["user"], "caps": {"cost_usd": usd}, **extra})


def estimate(model: str = UNKNOWN, tokens: int = 110_000) -> Usage:
    return Usage(input_tokens=tokens, output_tokens=1000, model=model)


# --- unpriced usage ---------------------------------------------------------------------


def test_an_unpriced_estimate_is_denied_by_a_hard_cost_cap_naming_the_model() -> None:
    engine = Engine([spend("10")])
    labels = {"user": "u"}
    checked = engine.check(labels, estimate(), T0)
    assert checked.decision is Decision.DENY
    (blocker,) = checked.blockers
    assert (blocker.unpriced, blocker.model, blocker.dimension) == (True, UNKNOWN, COST)
    assert blocker.requested == 0 and blocker.shortfall == 0
    for i in range(3):  # the seed: three 110k-token reservations of an unknown model
        reserved, _ = engine.reserve(labels, estimate(), 60, f"r{i}", T0)
        assert reserved.decision is Decision.DENY and reserved.blockers[0].unpriced
    assert engine.reservation_count == 0
    priced, _ = engine.reserve(labels, estimate("gpt-4o", 1000), 60, "priced", T0)
    assert priced.decision is Decision.ALLOW


def test_unpriced_allow_counts_an_unpriced_estimate_as_zero() -> None:
    engine = Engine([spend("10", unpriced="allow")])
    reserved, _ = engine.reserve({"user": "u"}, estimate(), 60, "r", T0)
    assert reserved.decision is Decision.ALLOW and reserved.cost_micro_usd is None


def test_an_unpriced_estimate_under_a_soft_cap_is_a_warning_and_a_meter_ignores_it() -> None:
    engine = Engine([spend("10", enforcement="soft"), policy({"name": "meter", "per": ["user"]})])
    reserved, _ = engine.reserve({"user": "u"}, estimate(), 60, "r", T0)
    assert reserved.decision is Decision.ALLOW_WITH_WARNING
    assert [w.unpriced for w in reserved.warnings] == [True]


def test_unpriced_usage_is_recorded_and_counted_per_ledger() -> None:
    engine = Engine([spend("10")])
    consumed, _ = engine.consume({"user": "u"}, estimate(tokens=500), "c", T0)
    assert consumed.cost_micro_usd is None
    totals = engine.get_ledger("spend{user=u}", T0).totals
    assert (totals.requests, totals.unpriced_requests, totals.unpriced_tokens) == (1, 1, 1500)
    assert totals.total_tokens == 1500 and totals.cost_micro_usd == 0


# --- request ids ------------------------------------------------------------------------


def test_a_reused_request_id_with_other_arguments_is_a_conflict_for_every_operation() -> None:
    runs = policy({"name": "runs", "per": ["user"], "caps": {"concurrency": 5}})
    engine = Engine([spend("100"), runs])
    u, v = {"user": "u"}, {"user": "v"}
    cheap = Usage(10, 5, model="gpt-4o")
    held, _ = engine.reserve(u, cheap, 60, "r1", T0)
    engine.reserve(u, cheap, 60, "r2", T0)
    engine.consume(u, cheap, "c1", T0)
    engine.commit(held.reservation_id, cheap, "k1", T0)
    engine.release("res-2", "l1", T0)
    engine.open_run(u, "run-1", 60, "o1", T0)
    engine.close_run("run-1", "x1", T0)
    different: list[Callable[[], object]] = [
        lambda: engine.reserve(v, cheap, 60, "r1", T0 + 1),
        lambda: engine.reserve(u, cheap, 61, "r1", T0 + 1),
        lambda: engine.reserve(u, cheap, 60, "r1", T0 + 1, run_id="other"),
        lambda: engine.consume(u, Usage(10, 6, model="gpt-4o"), "c1", T0 + 1),
        lambda: engine.consume(u, Usage(10, 5, model="gpt-4o", latency_us=1), "c1", T0 + 1),
        lambda: engine.commit(held.reservation_id, Usage(11, 5), "k1", T0 + 1),
        lambda: engine.release("res-1", "l1", T0 + 1),
        lambda: engine.open_run(v, "run-1", 60, "o1", T0 + 1),
        lambda: engine.close_run("run-2", "x1", T0 + 1),
    ]
    for call in different:
        with pytest.raises(Conflict, match="already used for a different"):
            call()
    # The same call again is a replay, label order notwithstanding.
    again, events = engine.consume(dict(reversed(list(u.items()))), cheap, "c1", T0 + 1)
    assert again.replayed and events == []
    assert engine.reserve(u, cheap, 60, "r1", T0 + 1)[0].replayed


def test_request_digests_survive_a_snapshot_and_older_states_replay_as_before() -> None:
    engine = Engine([spend("100")])
    engine.consume({"user": "u"}, Usage(10, model="gpt-4o"), "c1", T0)
    data = json.loads(json.dumps(engine.export_state()))
    restored = Engine.from_state(data)
    with pytest.raises(Conflict):
        restored.consume({"user": "u"}, Usage(11, model="gpt-4o"), "c1", T0 + 1)
    assert restored.consume({"user": "u"}, Usage(10, model="gpt-4o"), "c1", T0 + 1)[0].replayed
    # A format-1 state kept no digests: its ids replay whatever the arguments.
    legacy = dict(data, format="budgetd.state/1", done=[entry[:4] for entry in data["done"]])
    old = Engine.from_state(legacy)
    assert old.consume({"user": "u"}, Usage(11, model="gpt-4o"), "c1", T0 + 1)[0].replayed


# --- when the blocking amount comes back -----------------------------------------------


def test_a_calendar_blocker_comes_back_at_the_window_end_and_a_lifetime_one_never() -> None:
    daily = policy(
        {"name": "daily", "per": ["user"], "caps": {"total_tokens": 100}, "window": "calendar"}
    )
    forever = policy({"name": "forever", "per": ["user"], "caps": {"total_tokens": 100}})
    engine = Engine([daily, forever])
    engine.consume({"user": "u"}, Usage(100), "c", T0)
    checked = engine.check({"user": "u"}, Usage(1), T0 + 1)
    by_policy = {b.policy: b for b in checked.blockers}
    midnight = datetime(2023, 11, 15, tzinfo=ZoneInfo("UTC")).timestamp()
    assert by_policy["daily"].resets_at == midnight
    assert by_policy["forever"].resets_at is None
    statuses = {s.policy: s.dimensions[0] for s in checked.ledgers}
    assert statuses["daily"].resets_at == midnight
    assert statuses["forever"].resets_at is None


def test_a_sliding_blocker_comes_back_when_enough_usage_ages_out() -> None:
    tpm = policy(
        {
            "name": "tpm",
            "per": ["user"],
            "caps": {"total_tokens": 100},
            "window": {"kind": "sliding", "duration": "1m"},
        }
    )
    engine = Engine([tpm])
    engine.consume({"user": "u"}, Usage(40), "a", T0)
    engine.consume({"user": "u"}, Usage(60), "b", T0 + 30)
    small = engine.check({"user": "u"}, Usage(30), T0 + 31).blockers[0]
    assert small.resets_at == T0 + 60  # the first 40 age out: 30 fit
    large = engine.check({"user": "u"}, Usage(50), T0 + 31).blockers[0]
    assert large.resets_at == T0 + 90  # both must age out
    status = engine.get_ledger("tpm{user=u}", T0 + 31).dimensions[0]
    assert status.resets_at == T0 + 60
    # Held by a reservation: time alone does not bring it back.
    engine.consume({"user": "v"}, Usage(10), "c", T0)
    engine.reserve({"user": "v"}, Usage(90), 60, "r", T0)
    assert engine.check({"user": "v"}, Usage(50), T0 + 1).blockers[0].resets_at is None


# --- thresholds and labels --------------------------------------------------------------


def test_a_threshold_event_carries_the_remaining_amount_and_the_ledgers_labels() -> None:
    team = policy(
        {
            "name": "team",
            "match": {"tenant": "acme", "team": "*"},
            "per": ["user"],
            "caps": {"total_tokens": 1000},
        }
    )
    engine = Engine([team])
    labels = {"tenant": "acme", "team": "ml", "user": "u", "thread": "t1"}
    engine.reserve(labels, Usage(100), 60, "r", T0)
    _, events = engine.consume(labels, Usage(800), "c", T0)
    (crossing,) = of_type(events, ThresholdCrossed)
    assert (crossing.percent, crossing.used, crossing.remaining) == (75, 800, 100)
    expected = {"tenant": "acme", "user": "u"}  # exact match labels and per values
    assert crossing.labels == expected
    assert engine.get_ledger("team{user=u}", T0).labels == expected
    _, events = engine.consume(labels, Usage(300), "c2", T0)
    assert [e.labels for e in of_type(events, LedgerExhausted)] == [expected]
    _, events = engine.reset_ledger("team{user=u}", "reset", T0)
    assert [e.labels for e in of_type(events, LedgerClosed)] == [expected]


def test_a_shared_ledger_is_labelled_with_its_match_labels() -> None:
    engine = Engine([policy({"name": "acme", "match": {"tenant": "acme"}})])
    engine.consume({"tenant": "acme", "user": "u"}, Usage(5), "c", T0)
    assert engine.get_ledger("acme", T0).labels == {"tenant": "acme"}


# --- the seed behaviours ----------------------------------------------------------------


def test_a_lifetime_wall_clock_cap_counts_from_first_use_and_denies_once_passed() -> None:
    clock = policy({"name": "clock", "per": ["user"], "caps": {"wall_clock": "1h"}})
    runs = policy({"name": "runs", "per": ["user"], "caps": {"concurrency": 9}})
    engine = Engine([clock, runs])
    u = {"user": "u"}
    assert engine.check(u, Usage(1), T0).decision is Decision.ALLOW  # no use yet
    engine.consume(u, Usage(1), "c0", T0)
    status = engine.get_ledger("clock{user=u}", T0 + 1800).dimensions[0]
    assert (status.dimension, status.used, status.remaining) == (
        Dimension.WALL_CLOCK_MS,
        1_800_000,
        1_800_000,
    )
    assert status.resets_at is None
    late = T0 + 3600
    checked = engine.check(u, Usage(1), late)
    assert checked.decision is Decision.DENY
    assert checked.blockers[0].dimension is Dimension.WALL_CLOCK_MS
    assert checked.blockers[0].resets_at is None
    assert engine.reserve(u, Usage(1), 60, "r", late)[0].decision is Decision.DENY
    assert engine.open_run(u, "run", 60, "o", late)[0].decision is Decision.DENY
    engine.consume(u, Usage(7), "c1", late)  # usage is a fact: still recorded
    assert engine.get_ledger("clock{user=u}", late).totals.total_tokens == 8


def test_a_calendar_wall_clock_cap_counts_from_the_window_start_and_rolls_over() -> None:
    clock = policy(
        {"name": "clock", "per": ["user"], "caps": {"wall_clock": "1h"}, "window": "calendar"}
    )
    engine = Engine([clock])
    u = {"user": "u"}
    midnight = datetime(2023, 11, 15, tzinfo=ZoneInfo("UTC")).timestamp()
    engine.consume(u, Usage(1), "c", midnight + 10)
    denied = engine.check(u, Usage(1), midnight + 3600)
    assert denied.decision is Decision.DENY
    assert denied.blockers[0].resets_at == midnight + DAY
    assert engine.check(u, Usage(1), midnight + DAY + 5).decision is Decision.ALLOW


def test_a_wall_clock_cap_is_refused_with_a_sliding_window() -> None:
    with pytest.raises(InvalidArgument, match="wall_clock"):
        policy(
            {
                "name": "x",
                "caps": {"wall_clock": "1h"},
                "window": {"kind": "sliding", "duration": "1h"},
            }
        )


def test_a_missing_per_value_shares_the_default_bucket() -> None:
    users = policy(
        {
            "name": "users",
            "per": ["tenant", "user"],
            "missing": {"user": "anonymous"},
            "caps": {"total_tokens": 100},
        }
    )
    engine = Engine([users])
    engine.consume({"tenant": "acme"}, Usage(60), "a", T0)
    engine.consume({"tenant": "acme"}, Usage(40), "b", T0)
    assert engine.check({"tenant": "acme"}, Usage(1), T0).decision is Decision.DENY
    status = engine.get_ledger("users{tenant=acme,user=anonymous}", T0)
    assert status.totals.total_tokens == 100
    assert status.labels == {"tenant": "acme", "user": "anonymous"}
    assert engine.check({"tenant": "acme", "user": "ann"}, Usage(1), T0).decision is (
        Decision.ALLOW
    )
    # A key without a default is still required.
    assert engine.check({"user": "ann"}, Usage(1), T0).ledgers == ()
    with pytest.raises(InvalidArgument, match="not a `per` key"):
        policy({"name": "x", "per": ["user"], "missing": {"tenant": "t"}})


def test_an_idle_ledger_is_closed_after_its_ttl_with_its_final_totals() -> None:
    threads = policy(
        {"name": "threads", "per": ["thread"], "idle_ttl": "1h", "caps": {"total_tokens": 99}}
    )
    engine = Engine([threads])
    engine.consume({"thread": "a"}, Usage(5), "a1", T0)
    engine.consume({"thread": "b"}, Usage(7), "b1", T0)
    engine.reserve({"thread": "b"}, Usage(1), 3600, "hold", T0 + 1800)
    engine.consume({"thread": "a"}, Usage(5), "a2", T0 + 1800)
    assert of_type(engine.expire(T0 + 3600), LedgerClosed) == []  # used, or held
    engine.release("res-1", "free", T0 + 4000)  # b idle from here
    closed = of_type(engine.expire(T0 + 1800 + 3600), LedgerClosed)
    assert [(c.ledger, c.reason, c.totals.total_tokens) for c in closed] == [
        ("threads{thread=a}", LedgerClosedReason.IDLE, 10)
    ]
    assert engine.ledger_count == 1
    restored = Engine.from_state(json.loads(json.dumps(engine.export_state())))
    for e in (engine, restored):
        assert of_type(e.expire(T0 + 4000 + 3600 - 1), LedgerClosed) == []
        (closed_b,) = of_type(e.expire(T0 + 4000 + 3600), LedgerClosed)
        assert closed_b.ledger == "threads{thread=b}" and closed_b.totals.total_tokens == 7
        assert e.ledger_count == 0


def test_latency_keeps_microseconds() -> None:
    engine = Engine([policy({"name": "agents", "per": ["agent"]})])
    engine.consume({"agent": "a"}, Usage(1, latency_us=150_500), "a", T0)
    engine.consume({"agent": "a"}, Usage(1, latency_us=100_000), "b", T0)
    totals = engine.get_ledger("agents{agent=a}", T0).totals
    assert totals.latency_us_sum == 250_500 and totals.average_latency_ms == 125.25


def test_cache_write_and_reasoning_tokens_are_counted_as_parts_of_input_and_output() -> None:
    engine = Engine([policy({"name": "agents", "per": ["agent"]})])
    usage = Usage(100, 50, cached_input_tokens=20, cache_write_input_tokens=30, reasoning_tokens=40)
    engine.consume({"agent": "a"}, usage, "a", T0)
    totals = engine.get_ledger("agents{agent=a}", T0).totals
    assert (totals.input_tokens, totals.cached_input_tokens, totals.cache_write_input_tokens) == (
        100,
        20,
        30,
    )
    assert (totals.output_tokens, totals.reasoning_tokens, totals.total_tokens) == (50, 40, 150)
    for bad, field in (
        (Usage(10, cached_input_tokens=6, cache_write_input_tokens=5), "cached_input_tokens"),
        (Usage(10, 5, reasoning_tokens=6), "reasoning_tokens"),
        (Usage(10, cache_write_input_tokens=-1), "cache_write_input_tokens"),
    ):
        with pytest.raises(InvalidArgument, match=field):
            engine.consume({"agent": "a"}, bad, f"bad-{field}", T0)


ZONES = ("UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York", "Australia/Adelaide")


@pytest.mark.parametrize("unit", [CalendarUnit.MINUTE, CalendarUnit.HOUR])
def test_minute_and_hour_edges_are_exact_whole_seconds_in_local_time(unit: CalendarUnit) -> None:
    rng = random.Random(7)
    length = 60 if unit is CalendarUnit.MINUTE else 3600
    for _ in range(2000):
        zone = rng.choice(ZONES)
        now = rng.uniform(1.6e9, 1.9e9)
        start, end = calendar_bounds(unit, zone, now)
        assert start == math.floor(start) and end - start == length
        assert start <= now < end
        local = datetime.fromtimestamp(start, ZoneInfo(zone))
        assert local.second == 0 and local.microsecond == 0
        if unit is CalendarUnit.HOUR:
            assert local.minute == 0


def test_a_window_rollover_reports_exact_edges() -> None:
    hourly = policy({"name": "h", "per": ["u"], "window": {"kind": "calendar", "unit": "hour"}})
    engine = Engine([hourly])
    engine.consume({"u": "1"}, Usage(1), "a", 1_700_000_123.456789)
    (rolled,) = of_type(engine.expire(1_700_003_600.5), WindowRolledOver)
    assert (rolled.window_start, rolled.window_end) == (1_699_999_200.0, 1_700_002_800.0)


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"kind": "fixed", "duration": 2**63 - 1}, "window.duration"),
        ({"kind": "fixed", "duration": 10**12}, "window.duration"),
        ({"kind": "fixed", "duration": "15250284452471w"}, "window.duration"),
        ({"kind": "sliding", "duration": "25h"}, "window.duration"),
    ],
)
def test_durations_beyond_their_bounds_are_refused(window: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        policy({"name": "x", "window": window})


def test_a_model_label_contradicting_the_usage_is_refused_and_changes_nothing() -> None:
    engine = Engine([policy({"name": "models", "per": ["model"]})])
    labels = {"model": "gpt-4o"}
    for call in (
        lambda: engine.consume(labels, Usage(1, model="claude-3-5-sonnet"), "c", T0),
        lambda: engine.reserve(labels, Usage(1, model="claude-3-5-sonnet"), 60, "r", T0),
        lambda: engine.check(labels, Usage(1, model="claude-3-5-sonnet"), T0),
    ):
        with pytest.raises(InvalidArgument, match=r"labels\.model"):
            call()
    assert engine.ledger_count == 0
    engine.consume(labels, Usage(1, model="gpt-4o"), "same", T0)  # agreeing: fine
    engine.consume(labels, Usage(1), "none", T0)  # no model in the usage: the label's
    assert engine.get_ledger("models{model=gpt-4o}", T0).totals.requests == 2
