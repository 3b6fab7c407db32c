"""Every behaviour of the systems budgetd replaces holds in the pure ledger core.

Goal: each feature of the per-thread token registry, the orchestrator's daily budget, the
per-agent limits, the run supervisor and the usage reports that budgetd replaces is
reproduced by `budgetd.core.Engine`, one named test per behaviour. Method: drive the
engine with explicit instants (no clock) and assert on results, events and ledger
statuses. Defaults come from `default_policies()` where they fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from budgetd.core import (
    Decision,
    Denied,
    Dimension,
    DimensionStatus,
    Enforcement,
    Engine,
    LedgerClosed,
    LedgerClosedReason,
    LedgerExhausted,
    LedgerState,
    NotFound,
    Policy,
    PutPolicyResult,
    RunEnded,
    RunEndReason,
    Severity,
    ThresholdCrossed,
    Usage,
    UsageRecorded,
    WindowRolledOver,
    default_policies,
)

T0 = 1_700_000_000.0
TOTAL = Dimension.TOTAL_TOKENS
NEW_YORK = ZoneInfo("America/New_York")

E = TypeVar("E")


def of_type(events: Iterable[object], kind: type[E]) -> list[E]:
    """The events of one type, in order."""
    return [event for event in events if isinstance(event, kind)]


def policy(data: Mapping[str, Any]) -> Policy:
    return Policy.from_mapping(data)


def dim(engine: Engine, key: str, dimension: Dimension, now: float) -> DimensionStatus:
    """The status of one capped dimension of one ledger."""
    status = engine.get_ledger(key, now)
    matches = [d for d in status.dimensions if d.dimension is dimension]
    assert len(matches) == 1, f"{key} has no cap on {dimension.name}"
    return matches[0]


def tokens(n: int) -> Usage:
    return Usage(input_tokens=n)


# --- per-thread token registry ---------------------------------------------------------


def test_changed_default_thread_budget_applies_to_new_threads_only() -> None:
    """Lowering the per-thread default leaves existing threads at the old max."""
    engine = Engine(default_policies())
    engine.consume({"thread": "t1"}, tokens(10), "c1", T0)
    assert dim(engine, "per-thread{thread=t1}", TOTAL, T0).limit == 100_000
    lowered = policy({**engine.policy("per-thread").to_mapping(), "caps": {"total_tokens": 50}})
    result, _ = engine.put_policy(lowered, T0 + 1, apply_to_existing=False)
    assert result == PutPolicyResult(created=False, closed_ledgers=0)
    engine.consume({"thread": "t2"}, tokens(10), "c2", T0 + 2)
    assert dim(engine, "per-thread{thread=t1}", TOTAL, T0 + 2).limit == 100_000
    assert dim(engine, "per-thread{thread=t1}", TOTAL, T0 + 2).used == 10
    assert dim(engine, "per-thread{thread=t2}", TOTAL, T0 + 2).limit == 50


def test_changed_default_thread_budget_applied_to_existing_threads() -> None:
    """apply_to_existing=True moves existing ledgers to the new cap and fires crossings."""
    engine = Engine(default_policies())
    engine.consume({"thread": "t1"}, tokens(45), "c1", T0)
    lowered = policy({**engine.policy("per-thread").to_mapping(), "caps": {"total_tokens": 50}})
    _, events = engine.put_policy(lowered, T0 + 1, apply_to_existing=True)
    assert dim(engine, "per-thread{thread=t1}", TOTAL, T0 + 1).limit == 50
    crossed = [(c.ledger, c.percent) for c in of_type(events, ThresholdCrossed)]
    assert crossed == [("per-thread{thread=t1}", 75), ("per-thread{thread=t1}", 90)]
    assert engine.get_ledger("per-thread{thread=t1}", T0 + 1).state is LedgerState.CRITICAL


def test_remaining_is_never_negative_after_overspend() -> None:
    """Usage past the cap is recorded, and remaining stays at 0 rather than going negative."""
    engine = Engine([policy({"name": "cap", "caps": {"total_tokens": 100}})])
    engine.consume({}, tokens(150), "c1", T0)
    status = dim(engine, "cap", TOTAL, T0)
    assert status.used == 150
    assert status.remaining == 0
    assert status.percent_used == 150


def test_ledger_is_exhausted_at_one_hundred_percent() -> None:
    """State is FINAL at 99 % of the cap and EXHAUSTED exactly at 100 %."""
    engine = Engine([policy({"name": "cap", "caps": {"total_tokens": 100}})])
    result, _ = engine.consume({}, tokens(99), "c1", T0)
    assert result.ledgers == (("cap", LedgerState.FINAL),)
    result, _ = engine.consume({}, tokens(1), "c2", T0 + 1)
    assert result.ledgers == (("cap", LedgerState.EXHAUSTED),)
    assert engine.get_ledger("cap", T0 + 1).state is LedgerState.EXHAUSTED


def test_check_that_would_exceed_names_the_blocking_cap() -> None:
    """DENY names the policy, ledger, dimension, used, limit and shortfall, and changes nothing."""
    engine = Engine([policy({"name": "per-user", "per": ["user"], "caps": {"total_tokens": 1000}})])
    engine.consume({"user": "u1"}, tokens(900), "c1", T0)
    before = engine.get_ledger("per-user{user=u1}", T0 + 1)
    result = engine.check({"user": "u1"}, Usage(input_tokens=150, output_tokens=50), T0 + 1)
    assert result.decision is Decision.DENY
    assert len(result.blockers) == 1
    blocker = result.blockers[0]
    assert blocker.policy == "per-user"
    assert blocker.ledger == "per-user{user=u1}"
    assert blocker.dimension is TOTAL
    assert (blocker.used, blocker.reserved, blocker.requested) == (900, 0, 200)
    assert blocker.limit == 1000
    assert blocker.shortfall == 100
    assert blocker.enforcement is Enforcement.HARD
    assert engine.get_ledger("per-user{user=u1}", T0 + 1) == before


# --- threshold notifications ---------------------------------------------------------


def test_thresholds_75_90_95_fire_once_each() -> None:
    """Each default threshold is reported once, by the consume that crosses it."""
    engine = Engine([policy({"name": "cap", "caps": {"total_tokens": 1000}})])
    fired: list[tuple[int, Severity]] = []
    for i, amount in enumerate([750, 10, 140, 5, 50, 10]):
        result, events = engine.consume({}, tokens(amount), f"c{i}", T0 + i)
        assert list(result.crossings) == of_type(events, ThresholdCrossed)
        fired.extend((c.percent, c.severity) for c in result.crossings)
    assert fired == [(75, Severity.WARNING), (90, Severity.CRITICAL), (95, Severity.FINAL)]
    assert engine.get_ledger("cap", T0 + 10).state is LedgerState.FINAL


def test_one_consume_jumping_past_several_thresholds_reports_each() -> None:
    """One large consume reports 75, 90 and 95 together, plus LedgerExhausted at 100 %."""
    engine = Engine([policy({"name": "cap", "caps": {"total_tokens": 1000}})])
    result, events = engine.consume({}, tokens(1200), "c1", T0)
    crossings = [(c.percent, c.severity, c.used, c.limit) for c in result.crossings]
    assert crossings == [
        (75, Severity.WARNING, 1200, 1000),
        (90, Severity.CRITICAL, 1200, 1000),
        (95, Severity.FINAL, 1200, 1000),
    ]
    assert all(c.dimension is TOTAL and c.ledger == "cap" for c in result.crossings)
    assert list(result.crossings) == of_type(events, ThresholdCrossed)
    exhausted = of_type(events, LedgerExhausted)
    assert [(x.ledger, x.dimension, x.used, x.limit) for x in exhausted] == [
        ("cap", TOTAL, 1200, 1000)
    ]
    _, again = engine.consume({}, tokens(1), "c2", T0 + 1)
    assert of_type(again, ThresholdCrossed) == [] and of_type(again, LedgerExhausted) == []


def test_soft_warning_at_80_percent_is_a_configurable_threshold() -> None:
    """A policy with a single 80 % warning threshold fires at 80 % and not at 75 %."""
    engine = Engine(
        [
            policy(
                {
                    "name": "cap",
                    "caps": {"total_tokens": 1000},
                    "thresholds": [{"percent": 80, "severity": "warning"}],
                }
            )
        ]
    )
    result, _ = engine.consume({}, tokens(790), "c1", T0)
    assert result.crossings == ()
    assert result.ledgers == (("cap", LedgerState.OK),)
    result, _ = engine.consume({}, tokens(10), "c2", T0 + 1)
    assert [(c.percent, c.severity) for c in result.crossings] == [(80, Severity.WARNING)]
    assert result.ledgers == (("cap", LedgerState.WARNING),)
    assert engine.check({}, tokens(1), T0 + 2).decision is Decision.ALLOW_WITH_WARNING


# --- orchestrator budgets ---------------------------------------------------------------


def test_global_and_per_user_caps_either_blocks_and_users_are_isolated() -> None:
    """A user at their cap is denied alone; the global cap, once reached, denies everyone."""
    engine = Engine(
        [
            policy({"name": "global", "caps": {"total_tokens": 1000}}),
            policy({"name": "per-user", "per": ["user"], "caps": {"total_tokens": 300}}),
        ]
    )
    engine.consume({"user": "a"}, tokens(300), "c1", T0)
    denied = engine.check({"user": "a"}, tokens(1), T0 + 1)
    assert denied.decision is Decision.DENY
    assert [(b.policy, b.ledger) for b in denied.blockers] == [("per-user", "per-user{user=a}")]
    assert engine.check({"user": "b"}, tokens(200), T0 + 1).decision is Decision.ALLOW
    engine.consume({"user": "b"}, tokens(250), "c2", T0 + 2)
    engine.consume({"user": "c"}, tokens(250), "c3", T0 + 3)
    engine.consume({"user": "d"}, tokens(200), "c4", T0 + 4)
    fresh = engine.check({"user": "e"}, tokens(1), T0 + 5)
    assert fresh.decision is Decision.DENY
    assert [(b.policy, b.ledger, b.used) for b in fresh.blockers] == [("global", "global", 1000)]


def test_separate_input_and_output_token_caps() -> None:
    """input_tokens and output_tokens are capped independently of each other."""
    engine = Engine([policy({"name": "io", "caps": {"input_tokens": 1000, "output_tokens": 200}})])
    too_much_output = engine.check({}, Usage(input_tokens=500, output_tokens=300), T0)
    assert too_much_output.decision is Decision.DENY
    assert [b.dimension for b in too_much_output.blockers] == [Dimension.OUTPUT_TOKENS]
    engine.consume({}, Usage(input_tokens=900, output_tokens=0), "c1", T0)
    too_much_input = engine.check({}, Usage(input_tokens=200, output_tokens=10), T0 + 1)
    assert [b.dimension for b in too_much_input.blockers] == [Dimension.INPUT_TOKENS]
    assert engine.check({}, Usage(input_tokens=99, output_tokens=199), T0 + 1).decision is (
        Decision.ALLOW_WITH_WARNING  # input is at 90 %: allowed, with a warning
    )


def test_cost_cap_in_micro_usd() -> None:
    """Cost is priced from the table in integer micro-USD; an explicit cost wins."""
    engine = Engine([policy({"name": "spend", "caps": {"cost_usd": "1.00"}})])
    result, _ = engine.consume({}, Usage(input_tokens=200_000, model="gpt-4o"), "c1", T0)
    assert result.cost_micro_usd == 500_000  # 0.2M x 2.50 USD
    result, _ = engine.consume(
        {}, Usage(input_tokens=1_000_000, model="gpt-4o", cost_micro_usd=400_000), "c2", T0 + 1
    )
    assert result.cost_micro_usd == 400_000
    cost = dim(engine, "spend", Dimension.COST_MICRO_USD, T0 + 1)
    assert (cost.used, cost.limit) == (900_000, 1_000_000)
    check = engine.check({}, Usage(input_tokens=100_000, model="gpt-4o"), T0 + 2)
    assert check.decision is Decision.DENY
    assert check.cost_micro_usd == 250_000
    blocker = check.blockers[0]
    assert (blocker.dimension, blocker.requested, blocker.shortfall) == (
        Dimension.COST_MICRO_USD,
        250_000,
        150_000,
    )


def test_wall_clock_cap_ends_the_run_at_its_deadline() -> None:
    """A 30 min run_duration cap gives a deadline; past it usage is denied and expire ends it."""
    engine = Engine([policy({"name": "runs", "caps": {"run_duration": "30m", "concurrency": 10}})])
    labels = {"agent": "a"}
    opened, _ = engine.open_run(labels, "r1", 600, "o1", T0)
    assert opened.decision is Decision.ALLOW
    assert opened.deadline == T0 + 1800
    assert engine.get_ledger("runs", T0).run_duration_limit_ms == 1_800_000
    for beat in (T0 + 500, T0 + 1000, T0 + 1500):
        heartbeat, _ = engine.heartbeat("r1", beat)
        assert heartbeat.deadline == T0 + 1800
    assert heartbeat.expires_at == T0 + 1800  # never past the hard deadline
    before, _ = engine.reserve(labels, tokens(10), 60, "q1", T0 + 1700, run_id="r1")
    assert before.decision is Decision.ALLOW
    check = engine.check(labels, tokens(10), T0 + 1801, run_id="r1")
    assert check.decision is Decision.DENY
    assert [b.dimension for b in check.blockers] == [Dimension.RUN_DURATION_MS]
    late, events = engine.reserve(labels, tokens(10), 60, "q2", T0 + 1801, run_id="r1")
    assert late.decision is Decision.DENY and late.reservation_id == ""
    assert [d.blocker.dimension for d in of_type(events, Denied)] == [Dimension.RUN_DURATION_MS]
    assert engine.get_ledger("runs", T0 + 1801).open_runs == 1
    ended = of_type(engine.expire(T0 + 1802), RunEnded)
    assert [(e.run_id, e.reason) for e in ended] == [("r1", RunEndReason.DURATION_EXCEEDED)]
    assert ended[0].duration_s == 1800.0
    assert engine.run_count == 0
    assert engine.get_ledger("runs", T0 + 1802).open_runs == 0
    after = engine.check(labels, tokens(10), T0 + 1803, run_id="r1")
    assert [b.dimension for b in after.blockers] == [Dimension.RUN_DURATION_MS]


def test_daily_limit_resets_at_midnight_in_the_configured_zone() -> None:
    """A calendar-day window in New York resets at local midnight, not at UTC midnight."""
    midnight = datetime(2024, 3, 16, tzinfo=NEW_YORK).timestamp()
    utc_midnight = datetime(2024, 3, 16, tzinfo=ZoneInfo("UTC")).timestamp()
    assert midnight - utc_midnight == 4 * 3600
    engine = Engine(
        [
            policy(
                {
                    "name": "daily",
                    "caps": {"total_tokens": 1000},
                    "window": {"kind": "calendar", "unit": "day", "time_zone": "America/New_York"},
                }
            )
        ]
    )
    engine.consume({}, tokens(1000), "c1", utc_midnight - 60)
    assert engine.check({}, tokens(1), utc_midnight + 60).decision is Decision.DENY
    assert engine.check({}, tokens(1), midnight - 0.5).decision is Decision.DENY
    assert engine.check({}, tokens(1), midnight).decision is Decision.ALLOW
    assert dim(engine, "daily", TOTAL, midnight + 1).used == 0
    _, events = engine.consume({}, tokens(100), "c2", midnight + 1)
    rolled = of_type(events, WindowRolledOver)
    assert len(rolled) == 1
    assert (rolled[0].window_start, rolled[0].window_end) == (midnight - 86_400, midnight)
    assert (rolled[0].totals.total_tokens, rolled[0].totals.requests) == (1000, 1)
    status = engine.get_ledger("daily", midnight + 1)
    assert status.totals.total_tokens == 100
    assert (status.window_start, status.window_end) == (midnight, midnight + 86_400)


def test_daily_window_of_an_untouched_ledger_rolls_on_expire() -> None:
    """expire() past local midnight rolls an idle ledger and reports the closed day."""
    midnight = datetime(2024, 3, 16, tzinfo=NEW_YORK).timestamp()
    engine = Engine(
        [
            policy(
                {
                    "name": "daily",
                    "caps": {"total_tokens": 1000},
                    "window": {"kind": "calendar", "unit": "day", "time_zone": "America/New_York"},
                }
            )
        ]
    )
    engine.consume({}, tokens(300), "c1", midnight - 10)
    assert of_type(engine.expire(midnight - 1), WindowRolledOver) == []
    rolled = of_type(engine.expire(midnight + 5), WindowRolledOver)
    assert [(r.ledger, r.window_end, r.totals.total_tokens) for r in rolled] == [
        ("daily", midnight, 300)
    ]
    status = engine.get_ledger("daily", midnight + 5)
    assert status.totals.total_tokens == 0
    assert status.window_start == midnight


def test_per_agent_limit() -> None:
    """The default per-agent cap blocks the agent that reached it and no other agent."""
    engine = Engine(default_policies())
    assert engine.policy("per-agent").per == ("agent",)
    engine.consume({"agent": "a"}, tokens(2_000_000), "c1", T0)
    assert engine.get_ledger("per-agent{agent=a}", T0).state is LedgerState.EXHAUSTED
    denied = engine.check({"agent": "a"}, tokens(1), T0 + 1)
    assert denied.decision is Decision.DENY
    assert [(b.ledger, b.limit) for b in denied.blockers] == [("per-agent{agent=a}", 2_000_000)]
    assert engine.check({"agent": "b"}, tokens(1000), T0 + 1).decision is Decision.ALLOW


# --- run supervisor -------------------------------------------------------------------------


def test_max_ten_concurrent_runs_and_crashed_runs_free_their_slot() -> None:
    """The 11th run is denied; a run without heartbeats expires and its slot is reused."""
    engine = Engine(default_policies())
    labels = {"agent": "a"}
    for i in range(10):
        result, _ = engine.open_run(labels, f"r{i}", 60, f"o{i}", T0)
        assert result.decision is not Decision.DENY
    eleventh, _ = engine.open_run(labels, "r10", 60, "o10", T0 + 1)
    assert eleventh.decision is Decision.DENY
    assert [(b.policy, b.dimension, b.used, b.limit) for b in eleventh.blockers] == [
        ("runs", Dimension.CONCURRENCY, 10, 10)
    ]
    assert engine.run_count == 10
    for i in range(1, 10):  # r0 has crashed: it sends no heartbeat
        beat, _ = engine.heartbeat(f"r{i}", T0 + 50)
        assert beat.expires_at == T0 + 110
    ended = of_type(engine.expire(T0 + 75), RunEnded)
    assert [(e.run_id, e.reason) for e in ended] == [("r0", RunEndReason.HEARTBEAT_TIMEOUT)]
    assert ended[0].duration_s == 60.0  # it ran until its last heartbeat's ttl, not until now
    assert engine.run_count == 9
    assert engine.get_ledger("runs", T0 + 75).open_runs == 9
    retry, _ = engine.open_run(labels, "r10", 60, "o11", T0 + 76)
    assert retry.decision is not Decision.DENY
    assert engine.get_ledger("runs", T0 + 76).open_runs == 10


def test_hard_denies_soft_warns_shadow_reports() -> None:
    """hard: DENY, nothing held; soft: ALLOW_WITH_WARNING + Denied(SOFT); shadow: ALLOW +
    Denied(SHADOW)."""

    def engine_with(enforcement: str, used: int) -> Engine:
        engine = Engine(
            [policy({"name": "cap", "caps": {"total_tokens": 100}, "enforcement": enforcement})]
        )
        engine.consume({}, tokens(used), "c1", T0)
        return engine

    hard = engine_with("hard", 100)
    result, events = hard.reserve({}, tokens(10), 60, "r1", T0 + 1)
    assert (result.decision, result.reservation_id) == (Decision.DENY, "")
    assert [d.blocker.enforcement for d in of_type(events, Denied)] == [Enforcement.HARD]
    assert hard.reservation_count == 0

    soft = engine_with("soft", 100)
    result, events = soft.reserve({}, tokens(10), 60, "r1", T0 + 1)
    assert result.decision is Decision.ALLOW_WITH_WARNING
    assert result.reservation_id != "" and result.blockers == ()
    assert [w.enforcement for w in result.warnings] == [Enforcement.SOFT]
    assert [d.blocker.enforcement for d in of_type(events, Denied)] == [Enforcement.SOFT]
    assert soft.reservation_count == 1

    shadow = engine_with("shadow", 50)
    result, events = shadow.reserve({}, tokens(60), 60, "r1", T0 + 1)
    assert result.decision is Decision.ALLOW
    assert result.reservation_id != "" and result.blockers == ()
    denied = of_type(events, Denied)
    assert [(d.blocker.enforcement, d.blocker.shortfall) for d in denied] == [
        (Enforcement.SHADOW, 10)
    ]
    assert shadow.reservation_count == 1


# --- usage reports ------------------------------------------------------------------------


def test_usage_summary_per_agent_and_per_model() -> None:
    """Meters keep tokens, requests, cost and average latency per agent and per model."""
    engine = Engine(default_policies())
    engine.consume(
        {"agent": "a"},
        Usage(input_tokens=1000, output_tokens=500, model="gpt-4o", latency_us=200_000),
        "c1",
        T0,
    )
    engine.consume(
        {"agent": "a"},
        Usage(input_tokens=2000, output_tokens=100, model="claude-sonnet-4", latency_us=400_000),
        "c2",
        T0 + 1,
    )
    engine.consume({"agent": "b"}, Usage(input_tokens=10, model="gpt-4o"), "c3", T0 + 2)
    agent_a = engine.get_ledger("agent-usage{agent=a}", T0 + 3).totals
    assert (agent_a.total_tokens, agent_a.requests) == (3600, 2)
    assert agent_a.cost_micro_usd == 7500 + 7500
    assert agent_a.average_latency_ms == 300.0
    gpt = engine.get_ledger("model-usage{model=gpt-4o}", T0 + 3).totals
    assert (gpt.total_tokens, gpt.requests, gpt.cost_micro_usd) == (1510, 2, 7525)
    assert gpt.average_latency_ms == 200.0  # latency 0 means unknown: not averaged
    assert engine.get_ledger("agent-usage{agent=b}", T0 + 3).totals.average_latency_ms is None
    page = engine.list_ledgers(T0 + 3, policy="model-usage")
    assert sorted(s.key for s in page.ledgers) == [
        "model-usage{model=claude-sonnet-4}",
        "model-usage{model=gpt-4o}",
    ]
    assert page.next_page_token == ""


def test_closing_a_thread_returns_its_final_totals_and_frees_it() -> None:
    """close_run returns the run's totals and closes the per-thread ledger with it."""
    engine = Engine(default_policies())
    labels = {"thread": "t1", "agent": "a"}
    engine.open_run(labels, "run-1", 60, "o1", T0)
    engine.consume(labels, Usage(input_tokens=100, output_tokens=20), "c1", T0 + 1, "run-1")
    engine.consume(labels, Usage(input_tokens=300, output_tokens=80), "c2", T0 + 2, "run-1")
    result, events = engine.close_run("run-1", "x1", T0 + 30)
    assert (result.totals.total_tokens, result.totals.requests) == (500, 2)
    assert result.totals.run_duration_ms == 30_000
    assert result.duration_s == 30.0
    closed = {s.key: s for s in result.closed_ledgers}
    assert list(closed) == ["per-thread{thread=t1}"]
    assert closed["per-thread{thread=t1}"].totals.total_tokens == 500
    closed_events = of_type(events, LedgerClosed)
    assert [(e.ledger, e.reason, e.totals.total_tokens) for e in closed_events] == [
        ("per-thread{thread=t1}", LedgerClosedReason.RUN_CLOSED, 500)
    ]
    assert [e.reason for e in of_type(events, RunEnded)] == [RunEndReason.CLOSED]
    with pytest.raises(NotFound):
        engine.get_ledger("per-thread{thread=t1}", T0 + 31)
    assert engine.get_ledger("per-agent{agent=a}", T0 + 31).totals.total_tokens == 500


# --- cost estimation ------------------------------------------------------------------------


def test_cost_of_a_million_input_and_output_tokens_of_a_known_model() -> None:
    """1M input + 1M output tokens of gpt-4o cost 2.50 + 10.00 USD = 12.5M micro-USD."""
    engine = Engine(default_policies())
    check = engine.check(
        {"agent": "a"}, Usage(input_tokens=1_000_000, output_tokens=1_000_000, model="gpt-4o"), T0
    )
    assert check.cost_micro_usd == 12_500_000
    result, _ = engine.consume(
        {"agent": "a"},
        Usage(input_tokens=1_000_000, output_tokens=1_000_000, model="gpt-4o"),
        "c1",
        T0,
    )
    assert result.cost_micro_usd == 12_500_000
    assert engine.get_ledger("agent-usage{agent=a}", T0).totals.cost_micro_usd == 12_500_000


def test_cached_input_is_priced_at_the_cached_rate() -> None:
    """Cached input tokens of gpt-4o cost 1.25 USD per 1M instead of 2.50."""
    engine = Engine(default_policies())
    all_cached = Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000, model="gpt-4o")
    assert engine.check({}, all_cached, T0).cost_micro_usd == 1_250_000
    mixed = Usage(input_tokens=1_000_000, cached_input_tokens=400_000, model="gpt-4o")
    result, _ = engine.consume({"agent": "a"}, mixed, "c1", T0)
    assert result.cost_micro_usd == 600_000 * 5 // 2 + 400_000 * 5 // 4
    totals = engine.get_ledger("agent-usage{agent=a}", T0).totals
    assert (totals.input_tokens, totals.cached_input_tokens) == (1_000_000, 400_000)


def test_unknown_model_is_recorded_unpriced_and_counted() -> None:
    """Usage of an unknown model is recorded with cost None and counted as unpriced."""
    engine = Engine(default_policies())
    result, events = engine.consume(
        {"agent": "a"}, Usage(input_tokens=500, model="mystery-model-9"), "c1", T0
    )
    assert result.cost_micro_usd is None
    assert [e.cost_micro_usd for e in of_type(events, UsageRecorded)] == [None]
    engine.consume({"agent": "a"}, Usage(input_tokens=100, model="gpt-4o"), "c2", T0 + 1)
    totals = engine.get_ledger("agent-usage{agent=a}", T0 + 1).totals
    assert (totals.requests, totals.unpriced_requests) == (2, 1)
    assert totals.total_tokens == 600
    assert totals.cost_micro_usd == 250
    unknown = engine.get_ledger("model-usage{model=mystery-model-9}", T0 + 1).totals
    assert (unknown.unpriced_requests, unknown.cost_micro_usd) == (1, 0)
