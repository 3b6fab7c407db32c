"""State export/restore (the snapshot format) and mutation replay (the journal format).

Goal: an exported state survives JSON and restores to an engine that is the same in
every respect (its own export, and its answers to the next operations); recorded
mutations replayed in order onto the starting state rebuild the same state, from the
beginning or from a snapshot taken half-way.
Method: drive an engine through a mixed, deterministic workload (and random workloads
with hypothesis), recording every mutation as encoded JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetd.core import (
    BudgetError,
    Dimension,
    Engine,
    InvalidArgument,
    LimitReached,
    Limits,
    NotFound,
    Policy,
    Usage,
    default_policies,
)
from budgetd.core.events import RunEnded
from budgetd.core.mutations import decode, encode

EXTRA_POLICIES = (
    {
        "name": "per-user-cost",
        "per": ["user"],
        "caps": {"cost_usd": "0.05", "input_tokens": 50_000},
        "enforcement": "soft",
        "thresholds": [{"percent": 80, "severity": "warning"}],
    },
    {
        "name": "tpm",
        "per": ["user"],
        "caps": {"total_tokens": 20_000},
        "window": {"kind": "sliding", "duration": "60s"},
    },
    {
        "name": "monthly",
        "caps": {"total_tokens": 10**9},
        "window": {"kind": "calendar", "unit": "month", "time_zone": "Europe/Paris"},
        "enforcement": "shadow",
    },
    {"name": "trial", "per": ["user"], "caps": {"requests": 50}, "window": "fixed"},
)


def _policies() -> list[Policy]:
    extra = [dict(p) for p in EXTRA_POLICIES]
    extra[-1]["window"] = {"kind": "fixed", "duration": "7d"}
    return [*default_policies(), *(Policy.from_mapping(p) for p in extra)]


def _engine() -> Engine:
    return Engine(_policies(), limits=Limits(max_ledgers=40), id_prefix="t-")


def _recording(engine: Engine) -> list[str]:
    journal: list[str] = []
    engine.recorder = lambda mutation: journal.append(json.dumps(encode(mutation)))
    return journal


def _replay(engine: Engine, journal: list[str]) -> None:
    for line in journal:
        engine.apply(decode(json.loads(line)))


def _roundtrip(engine: Engine) -> Engine:
    return Engine.from_state(json.loads(json.dumps(engine.export_state())))


def _workload(engine: Engine, steps: int, start: float = 1_800_000_000.0) -> float:
    """A deterministic mix of every mutation, with clock jumps; returns the final time."""
    now = start
    held: list[str] = []
    runs: list[str] = []
    for i in range(steps):
        now += (7, 45, 3_700, 86_500)[i % 4] if i % 5 == 0 else 1.5
        labels = {"agent": f"a{i % 3}", "thread": f"t{i % 7}", "user": f"u{i % 4}"}
        model = ("gpt-4o", "claude-sonnet-4-5", "mystery-1")[i % 3]
        kind = i % 9
        if kind in (0, 1):
            engine.consume(
                labels, Usage(900 + i, 300, model=model, latency_us=i * 1000 + 500), f"c{i}", now
            )
        elif kind in (2, 3):
            result, _ = engine.reserve(labels, Usage(1_000, 500, model=model), 30.0, f"r{i}", now)
            if result.reservation_id:
                held.append(result.reservation_id)
        elif kind == 4 and held:
            engine.commit(held.pop(0), Usage(1_200, 700, model=model), f"k{i}", now)
        elif kind == 5 and held:
            engine.release(held.pop(), f"x{i}", now)
        elif kind == 6:
            opened, _ = engine.open_run(labels, f"run{i}", 120.0, f"o{i}", now)
            if opened.expires_at is not None:
                runs.append(opened.run_id)
        elif kind == 7 and runs:
            run_id = runs.pop(0)
            try:
                engine.heartbeat(run_id, now)
                engine.close_run(run_id, f"z{i}", now)
            except NotFound:  # expired meanwhile (its heartbeat timed out)
                pass
        else:
            engine.expire(now)
        if i == steps // 2:
            engine.set_ledger_limits("per-agent{agent=a1}", [(Dimension.TOTAL_TOKENS, 5_000)], now)
            engine.reset_ledger("daily", f"reset{i}", now)
    return now


def test_export_survives_json_and_restores_identically() -> None:
    """export → JSON → restore → export gives the same data."""
    engine = _engine()
    _workload(engine, 200)
    exported = engine.export_state()
    assert exported["ledgers"] and exported["done"]
    assert _roundtrip(engine).export_state() == exported


def test_restored_engine_answers_like_the_original() -> None:
    """After a restore, the next operations give equal results, events and states."""
    engine = _engine()
    now = _workload(engine, 150)
    twin = _roundtrip(engine)
    for step, (op, args) in enumerate(
        [
            ("consume", ({"agent": "a1", "thread": "t1", "user": "u1"}, Usage(5_000, 10))),
            ("reserve", ({"agent": "a2", "thread": "t3", "user": "u2"}, Usage(50, 50), 10.0)),
            ("consume", ({"agent": "a9", "thread": "new", "user": "u9"}, Usage(1, 1))),
        ]
    ):
        when = now + step
        first = getattr(engine, op)(*args, f"after{step}", when)
        second = getattr(twin, op)(*args, f"after{step}", when)
        assert first == second
    later = now + 10**6
    assert engine.expire(later) == twin.expire(later)
    assert engine.export_state() == twin.export_state()


def test_journal_replay_rebuilds_the_state() -> None:
    """Every recorded mutation, replayed in order on a fresh engine, gives the same state."""
    engine = _engine()
    journal = _recording(engine)
    _workload(engine, 250)
    ops = {json.loads(line)["op"] for line in journal}
    assert ops >= {
        "consume",
        "reserve",
        "commit",
        "release",
        "open_run",
        "heartbeat",
        "close_run",
        "expire",
        "set_ledger_limits",
        "reset_ledger",
    }
    replica = _engine()
    _replay(replica, journal)
    assert replica.export_state() == engine.export_state()


def test_snapshot_plus_journal_tail_rebuilds_the_state() -> None:
    """A snapshot taken half-way plus the records after it gives the final state."""
    engine = _engine()
    journal = _recording(engine)
    now = _workload(engine, 120)
    snapshot = json.dumps(engine.export_state())
    mark = len(journal)
    _workload(engine, 120, start=now + 1)
    replica = Engine.from_state(json.loads(snapshot))
    _replay(replica, journal[mark:])
    assert replica.export_state() == engine.export_state()


def test_restore_rejects_another_format() -> None:
    """A state of an unknown format fails with the field named."""
    data = _engine().export_state()
    data["format"] = "budgetd.state/999"
    with pytest.raises(InvalidArgument) as caught:
        Engine.from_state(data)
    assert caught.value.field == "state.format"


def test_decode_rejects_an_unknown_mutation() -> None:
    """A journal record naming an unknown operation is refused, not guessed at."""
    with pytest.raises(InvalidArgument):
        decode({"op": "drop_everything", "now": 1.0, "args": {}})


OPS: list[Callable[[Engine, int, float], Any]] = [
    lambda e, i, now: e.consume({"user": f"u{i % 3}", "agent": "a"}, Usage(i, i), f"c{i}", now),
    lambda e, i, now: e.reserve({"user": f"u{i % 3}"}, Usage(i, 1), 5.0, f"r{i}", now),
    lambda e, i, now: e.open_run(
        {"agent": "a", "thread": f"t{i % 4}"}, f"run{i}", 9.0, f"o{i}", now
    ),
    lambda e, i, now: e.expire(now),
]


@settings(max_examples=40, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(OPS) - 1), st.floats(0.0, 100_000.0)),
        min_size=1,
        max_size=60,
    )
)
def test_random_histories_export_restore_and_replay(steps: list[tuple[int, float]]) -> None:
    """Any history: the export round-trips and the journal replays to the same state."""
    engine = _engine()
    journal = _recording(engine)
    now = 1_800_000_000.0
    for i, (op, advance) in enumerate(steps):
        now += advance
        OPS[op](engine, i, now)
    exported = engine.export_state()
    assert _roundtrip(engine).export_state() == exported
    replica = _engine()
    _replay(replica, journal)
    assert replica.export_state() == exported


MIXED_OPS: list[Callable[[Engine, int, float], Any]] = [
    *OPS,
    lambda e, i, now: e.heartbeat(f"run{i - 1}", now) if f"run{i - 1}" in e._runs else None,
    lambda e, i, now: (
        e.close_run(f"run{i - 2}", f"k{i}", now) if f"run{i - 2}" in e._runs else None
    ),
    lambda e, i, now: e.consume({"user": f"v{i}", "agent": "b"}, Usage(3, 3), f"n{i}", now),
    lambda e, i, now: e.compact(now),
]


def _events_live_and_replayed(steps: list[tuple[int, float]], cut: int) -> tuple[Any, Any]:
    """The events of every mutation after step `cut`, live and replayed from a snapshot
    taken at `cut` (through JSON, as the daemon writes it)."""
    live = Engine(_policies(), limits=Limits(max_ledgers=12), id_prefix="t-")
    journal: list[str] = []
    live.recorder = lambda mutation: journal.append(json.dumps(encode(mutation)))
    live_events: list[Any] = []
    snapshot: str | None = None
    mark = 0
    now = 1_800_000_000.0
    for i, (op, advance) in enumerate(steps):
        if i == cut:
            live.compact(now)  # as the runtime does before a snapshot (a recorded mutation)
            snapshot, mark = json.dumps(live.export_state()), len(journal)
        now += advance
        try:
            outcome = MIXED_OPS[op](live, i, now)
        except BudgetError:
            continue  # refused: changes nothing, records nothing
        if i >= cut and outcome is not None:
            live_events += outcome if isinstance(outcome, list) else outcome[1]
    assert snapshot is not None
    replica = Engine.from_state(
        json.loads(snapshot), limits=Limits(max_ledgers=12), prices=live.prices
    )
    replayed: list[Any] = []
    for line in journal[mark:]:
        replayed += replica.apply(decode(json.loads(line), replica.limits))[1]
    assert replica.export_state() == live.export_state()
    return live_events, replayed


@settings(max_examples=150, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(MIXED_OPS) - 1), st.floats(0.0, 40_000.0)),
        min_size=2,
        max_size=80,
    ),
    st.data(),
)
def test_replay_from_a_snapshot_regenerates_the_same_events(
    steps: list[tuple[int, float]], data: st.DataObject
) -> None:
    """Event seqs survive a restart only if replay produces the very events the live
    engine published, in order: evictions, expiries and rollovers included."""
    cut = data.draw(st.integers(0, len(steps) - 1))
    live_events, replayed = _events_live_and_replayed(steps, cut)
    assert replayed == live_events


def test_runs_due_together_end_in_the_same_order_live_and_restored() -> None:
    """A heartbeat leaves a stale key in the live expiry heap; a restored engine's heap
    has exact keys. Both must end due runs by (due time, id)."""
    runs_policy = Policy.from_mapping({"name": "runs", "caps": {"concurrency": 5}})
    live = Engine([runs_policy], id_prefix="t-")
    t0 = 1_800_000_000.0
    live.open_run({}, "a", 10.0, "oa", t0)
    live.open_run({}, "b", 10.0, "ob", t0 + 1)
    live.heartbeat("a", t0 + 5)  # a is now due at t0+15, b at t0+11
    restored = Engine.from_state(json.loads(json.dumps(live.export_state())))
    ended = [
        [e.run_id for e in engine.expire(t0 + 20) if isinstance(e, RunEnded)]
        for engine in (live, restored)
    ]
    assert ended[0] == ended[1] == ["b", "a"]


def test_a_request_refused_for_room_rolls_no_window() -> None:
    """A refusal (no room for a new ledger) changes nothing, not even a rollover that was
    due: an unrecorded change would make replay diverge."""
    hourly = {"name": "hourly", "per": ["user"], "caps": {"requests": 9}, "evictable": False}
    hourly["window"] = {"kind": "calendar", "unit": "hour"}
    agents = {"name": "agents", "per": ["agent"], "evictable": False}
    policies = [Policy.from_mapping(hourly), Policy.from_mapping(agents)]
    engine = Engine(policies, limits=Limits(max_ledgers=2), id_prefix="t-")
    t0 = 1_800_000_000.0
    engine.consume({"user": "ann", "agent": "a"}, Usage(1, 1), "c1", t0)
    before = engine.export_state()["ledgers"]
    with pytest.raises(LimitReached):  # ann's hour is over; agent b has no room
        engine.consume({"user": "ann", "agent": "b"}, Usage(1, 1), "c2", t0 + 7200)
    assert engine.export_state()["ledgers"] == before
