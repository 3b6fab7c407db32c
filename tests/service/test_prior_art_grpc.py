"""Every prior-art scenario of `tests/unit/test_prior_art.py`, over gRPC.

Goal: each behaviour of the systems budgetd replaces (per-thread token registry,
orchestrator budgets, per-agent limits, run supervisor, usage reports, cost estimation)
holds for a client that only sees the wire contract. Method: the unit scenarios, one test
each, driven through a real in-process grpc.aio server (`tests.service.support`) with its
manual clock; results are read only from wire answers (responses, Check, GetLedger,
ListLedgers, ListPolicies, Subscribe), never from the engine. Policy changes go through
BudgetAdminService.PutPolicy. The clock starts at 2027-01-15T08:00:00Z and only moves
when a test advances it; `Served.expire()` is one tick of the daemon's expiry timer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from budgetd.core import Policy
from budgetd.v1 import budget_pb2 as pb
from tests.service.support import START, Served

TOTAL = pb.DIMENSION_TOTAL_TOKENS
NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")
T1 = "per-thread{thread=t1}"
T2 = "per-thread{thread=t2}"
MARKERS = itertools.count()

Make = Callable[..., Served]


# --- helpers ---------------------------------------------------------------------------


def policy(data: Mapping[str, Any]) -> Policy:
    return Policy.from_mapping(data)


def serve_one(make_served: Make, data: Mapping[str, Any]) -> Served:
    """A server running only the policy `data`."""
    return make_served(policies=(policy(data),))


def tokens(n: int, model: str = "") -> pb.Usage:
    return pb.Usage(input_tokens=n, model=model)


def seconds(value: Timestamp | Duration) -> float:
    return value.seconds + value.nanos / 1e9


def move_to(served: Served, instant: float) -> None:
    """Move the server clock forward to `instant`."""
    assert instant >= served.clock.now, "the clock only moves forward"
    served.clock.advance(instant - served.clock.now)


def consume(
    served: Served,
    request_id: str,
    labels: Mapping[str, str],
    usage: pb.Usage,
    run_id: str = "",
) -> pb.ConsumeResponse:
    request = pb.ConsumeRequest(request_id=request_id, labels=labels, usage=usage, run_id=run_id)
    answer: pb.ConsumeResponse = served.budget.Consume(request)
    assert not answer.replayed
    return answer


def check(
    served: Served, labels: Mapping[str, str], estimate: pb.Usage, run_id: str = ""
) -> pb.CheckResponse:
    request = pb.CheckRequest(labels=labels, estimate=estimate, run_id=run_id)
    answer: pb.CheckResponse = served.budget.Check(request)
    return answer


def ledger(served: Served, key: str) -> pb.LedgerStatus:
    answer: pb.GetLedgerResponse = served.budget.GetLedger(pb.GetLedgerRequest(key=key))
    return answer.ledger


def dim(served: Served, key: str, dimension: pb.Dimension) -> pb.DimensionStatus:
    """The status of one capped dimension of one ledger."""
    matches = [d for d in ledger(served, key).dimensions if d.dimension == dimension]
    assert len(matches) == 1, f"{key} has no cap on {pb.Dimension.Name(dimension)}"
    return matches[0]


def briefs(answer: pb.ConsumeResponse) -> list[tuple[str, pb.LedgerState]]:
    return [(brief.key, brief.state) for brief in answer.ledgers]


def average_latency(totals: pb.Totals) -> float | None:
    """The contract's average latency: undefined (None) without samples."""
    if totals.latency_samples == 0:
        return None
    return totals.latency_ms_sum / totals.latency_samples


def stored_policy(served: Served, name: str) -> pb.Policy:
    answer: pb.ListPoliciesResponse = served.admin.ListPolicies(pb.ListPoliciesRequest())
    (found,) = [p for p in answer.policies if p.name == name]
    return found


def with_total_tokens_cap(stored: pb.Policy, limit: int) -> pb.Policy:
    """A copy of `stored` whose only cap is `limit` total tokens."""
    changed = pb.Policy()
    changed.CopyFrom(stored)
    del changed.caps[:]
    changed.caps.append(pb.Cap(dimension=TOTAL, limit=limit))
    return changed


def events_so_far(served: Served, *kinds: pb.EventKind) -> list[pb.Event]:
    """Every retained event of `kinds`, in seq order, up to this call.

    A marker policy is put and deleted after what the test did; Subscribe from the
    start (after_seq=0) replays the retained events, and the marker's deletion ends the
    read: nothing waits for time to pass (the deadline only guards against a hang).
    """
    assert kinds and pb.EVENT_KIND_POLICY_CHANGED not in kinds
    marker = f"marker-{next(MARKERS)}"
    served.admin.PutPolicy(
        pb.PutPolicyRequest(policy=pb.Policy(name=marker, match={"marker": marker}))
    )
    served.admin.DeletePolicy(pb.DeletePolicyRequest(name=marker))
    request = pb.SubscribeRequest(after_seq=0, kinds=[*kinds, pb.EVENT_KIND_POLICY_CHANGED])
    stream = served.budget.Subscribe(request, timeout=30)
    found: list[pb.Event] = []
    try:
        for response in stream:
            event: pb.Event = response.event
            if event.WhichOneof("payload") == "policy_changed":
                if event.policy_changed.name == marker and event.policy_changed.deleted:
                    return found
                continue
            found.append(event)
    finally:
        stream.cancel()
    raise AssertionError("the event stream ended before the marker")


def crossings_of(events: list[pb.Event]) -> list[pb.ThresholdCrossing]:
    return [e.threshold_crossed.crossing for e in events]


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    code: grpc.StatusCode = raised.value.code()
    return code


# --- per-thread token registry ---------------------------------------------------------


def test_changed_default_thread_budget_applies_to_new_threads_only_over_grpc(
    served: Served,
) -> None:
    """Lowering the per-thread default leaves existing threads at the old max."""
    consume(served, "c1", {"thread": "t1"}, tokens(10))
    assert dim(served, T1, TOTAL).limit == 100_000
    served.clock.advance(1)
    lowered = with_total_tokens_cap(stored_policy(served, "per-thread"), 50)
    put: pb.PutPolicyResponse = served.admin.PutPolicy(
        pb.PutPolicyRequest(policy=lowered, apply_to_existing=False)
    )
    assert not put.created
    assert [(c.dimension, c.limit) for c in put.policy.caps] == [(TOTAL, 50)]
    served.clock.advance(1)
    consume(served, "c2", {"thread": "t2"}, tokens(10))
    t1 = dim(served, T1, TOTAL)
    assert (t1.limit, t1.used) == (100_000, 10)
    assert dim(served, T2, TOTAL).limit == 50
    assert events_so_far(served, pb.EVENT_KIND_LEDGER_CLOSED) == []  # nothing was closed


def test_changed_default_thread_budget_applied_to_existing_threads_over_grpc(
    served: Served,
) -> None:
    """apply_to_existing=True moves existing ledgers to the new cap and fires crossings."""
    consume(served, "c1", {"thread": "t1"}, tokens(45))
    served.clock.advance(1)
    lowered = with_total_tokens_cap(stored_policy(served, "per-thread"), 50)
    served.admin.PutPolicy(pb.PutPolicyRequest(policy=lowered, apply_to_existing=True))
    assert dim(served, T1, TOTAL).limit == 50
    crossed = crossings_of(events_so_far(served, pb.EVENT_KIND_THRESHOLD_CROSSED))
    assert [(c.ledger, c.percent) for c in crossed] == [(T1, 75), (T1, 90)]
    assert ledger(served, T1).state == pb.LEDGER_STATE_CRITICAL


def test_remaining_is_never_negative_after_overspend_over_grpc(make_served: Make) -> None:
    """Usage past the cap is recorded, and remaining stays at 0 rather than going negative."""
    served = serve_one(make_served, {"name": "cap", "caps": {"total_tokens": 100}})
    consume(served, "c1", {}, tokens(150))
    status = dim(served, "cap", TOTAL)
    assert status.used == 150
    assert status.remaining == 0
    assert status.percent == 150


def test_ledger_is_exhausted_at_one_hundred_percent_over_grpc(make_served: Make) -> None:
    """State is FINAL at 99 % of the cap and EXHAUSTED exactly at 100 %."""
    served = serve_one(make_served, {"name": "cap", "caps": {"total_tokens": 100}})
    answer = consume(served, "c1", {}, tokens(99))
    assert briefs(answer) == [("cap", pb.LEDGER_STATE_FINAL)]
    served.clock.advance(1)
    answer = consume(served, "c2", {}, tokens(1))
    assert briefs(answer) == [("cap", pb.LEDGER_STATE_EXHAUSTED)]
    assert ledger(served, "cap").state == pb.LEDGER_STATE_EXHAUSTED


def test_check_that_would_exceed_names_the_blocking_cap_over_grpc(make_served: Make) -> None:
    """DENY names the policy, ledger, dimension, used, limit and shortfall, and changes nothing."""
    served = serve_one(
        make_served, {"name": "per-user", "per": ["user"], "caps": {"total_tokens": 1000}}
    )
    consume(served, "c1", {"user": "u1"}, tokens(900))
    served.clock.advance(1)
    before = ledger(served, "per-user{user=u1}")
    answer = check(served, {"user": "u1"}, pb.Usage(input_tokens=150, output_tokens=50))
    assert answer.decision == pb.DECISION_DENY
    assert len(answer.blockers) == 1
    blocker = answer.blockers[0]
    assert blocker.policy == "per-user"
    assert blocker.ledger == "per-user{user=u1}"
    assert blocker.dimension == TOTAL
    assert (blocker.used, blocker.reserved, blocker.requested) == (900, 0, 200)
    assert blocker.limit == 1000
    assert blocker.shortfall == 100
    assert blocker.enforcement == pb.ENFORCEMENT_HARD
    assert ledger(served, "per-user{user=u1}") == before
    assert events_so_far(served, pb.EVENT_KIND_DENIED) == []  # Check emits no Denied


# --- threshold notifications ---------------------------------------------------------


def test_thresholds_75_90_95_fire_once_each_over_grpc(make_served: Make) -> None:
    """Each default threshold is reported once, by the consume that crosses it."""
    served = serve_one(make_served, {"name": "cap", "caps": {"total_tokens": 1000}})
    fired: list[tuple[int, pb.Severity]] = []
    seen = 0
    for i, amount in enumerate([750, 10, 140, 5, 50, 10]):
        answer = consume(served, f"c{i}", {}, tokens(amount))
        events = events_so_far(served, pb.EVENT_KIND_THRESHOLD_CROSSED)
        assert crossings_of(events[seen:]) == list(answer.crossings)
        seen = len(events)
        fired.extend((c.percent, c.severity) for c in answer.crossings)
        served.clock.advance(1)
    assert fired == [
        (75, pb.SEVERITY_WARNING),
        (90, pb.SEVERITY_CRITICAL),
        (95, pb.SEVERITY_FINAL),
    ]
    served.clock.advance(4)
    assert ledger(served, "cap").state == pb.LEDGER_STATE_FINAL


def test_one_consume_jumping_past_several_thresholds_reports_each_over_grpc(
    make_served: Make,
) -> None:
    """One large consume reports 75, 90 and 95 together, plus LedgerExhausted at 100 %."""
    served = serve_one(make_served, {"name": "cap", "caps": {"total_tokens": 1000}})
    answer = consume(served, "c1", {}, tokens(1200))
    crossings = [(c.percent, c.severity, c.used, c.limit) for c in answer.crossings]
    assert crossings == [
        (75, pb.SEVERITY_WARNING, 1200, 1000),
        (90, pb.SEVERITY_CRITICAL, 1200, 1000),
        (95, pb.SEVERITY_FINAL, 1200, 1000),
    ]
    assert all((c.dimension, c.ledger, c.policy) == (TOTAL, "cap", "cap") for c in answer.crossings)
    kinds = (pb.EVENT_KIND_THRESHOLD_CROSSED, pb.EVENT_KIND_LEDGER_EXHAUSTED)
    events = events_so_far(served, *kinds)
    crossed = [e for e in events if e.WhichOneof("payload") == "threshold_crossed"]
    assert crossings_of(crossed) == list(answer.crossings)
    exhausted = [
        e.ledger_exhausted for e in events if e.WhichOneof("payload") == "ledger_exhausted"
    ]
    assert [(x.ledger, x.dimension, x.used, x.limit) for x in exhausted] == [
        ("cap", TOTAL, 1200, 1000)
    ]
    served.clock.advance(1)
    again = consume(served, "c2", {}, tokens(1))
    assert list(again.crossings) == []
    assert events_so_far(served, *kinds) == events  # no new crossing, no second exhaustion


def test_soft_warning_at_80_percent_is_a_configurable_threshold_over_grpc(
    make_served: Make,
) -> None:
    """A policy with a single 80 % warning threshold fires at 80 % and not at 75 %."""
    served = serve_one(
        make_served,
        {
            "name": "cap",
            "caps": {"total_tokens": 1000},
            "thresholds": [{"percent": 80, "severity": "warning"}],
        },
    )
    answer = consume(served, "c1", {}, tokens(790))
    assert list(answer.crossings) == []
    assert briefs(answer) == [("cap", pb.LEDGER_STATE_OK)]
    served.clock.advance(1)
    answer = consume(served, "c2", {}, tokens(10))
    assert [(c.percent, c.severity) for c in answer.crossings] == [(80, pb.SEVERITY_WARNING)]
    assert briefs(answer) == [("cap", pb.LEDGER_STATE_WARNING)]
    served.clock.advance(1)
    assert check(served, {}, tokens(1)).decision == pb.DECISION_ALLOW_WITH_WARNING


# --- orchestrator budgets ---------------------------------------------------------------


def test_global_and_per_user_caps_either_blocks_and_users_are_isolated_over_grpc(
    make_served: Make,
) -> None:
    """A user at their cap is denied alone; the global cap, once reached, denies everyone."""
    served = make_served(
        policies=(
            policy({"name": "global", "caps": {"total_tokens": 1000}}),
            policy({"name": "per-user", "per": ["user"], "caps": {"total_tokens": 300}}),
        )
    )
    consume(served, "c1", {"user": "a"}, tokens(300))
    served.clock.advance(1)
    denied = check(served, {"user": "a"}, tokens(1))
    assert denied.decision == pb.DECISION_DENY
    assert [(b.policy, b.ledger) for b in denied.blockers] == [("per-user", "per-user{user=a}")]
    assert check(served, {"user": "b"}, tokens(200)).decision == pb.DECISION_ALLOW
    for i, (user, amount) in enumerate([("b", 250), ("c", 250), ("d", 200)], start=2):
        served.clock.advance(1)
        consume(served, f"c{i}", {"user": user}, tokens(amount))
    served.clock.advance(1)
    fresh = check(served, {"user": "e"}, tokens(1))
    assert fresh.decision == pb.DECISION_DENY
    assert [(b.policy, b.ledger, b.used) for b in fresh.blockers] == [("global", "global", 1000)]


def test_separate_input_and_output_token_caps_over_grpc(make_served: Make) -> None:
    """input_tokens and output_tokens are capped independently of each other."""
    served = serve_one(
        make_served, {"name": "io", "caps": {"input_tokens": 1000, "output_tokens": 200}}
    )
    too_much_output = check(served, {}, pb.Usage(input_tokens=500, output_tokens=300))
    assert too_much_output.decision == pb.DECISION_DENY
    assert [b.dimension for b in too_much_output.blockers] == [pb.DIMENSION_OUTPUT_TOKENS]
    consume(served, "c1", {}, pb.Usage(input_tokens=900, output_tokens=0))
    served.clock.advance(1)
    too_much_input = check(served, {}, pb.Usage(input_tokens=200, output_tokens=10))
    assert [b.dimension for b in too_much_input.blockers] == [pb.DIMENSION_INPUT_TOKENS]
    fits = check(served, {}, pb.Usage(input_tokens=99, output_tokens=199))
    assert fits.decision == pb.DECISION_ALLOW_WITH_WARNING  # input is at 90 %: with a warning


def test_cost_cap_in_micro_usd_over_grpc(make_served: Make) -> None:
    """Cost is priced from the table in integer micro-USD; an explicit cost wins."""
    served = serve_one(make_served, {"name": "spend", "caps": {"cost_usd": "1.00"}})
    answer = consume(served, "c1", {}, pb.Usage(input_tokens=200_000, model="gpt-4o"))
    assert (answer.cost_known, answer.cost_micro_usd) == (True, 500_000)  # 0.2M x 2.50 USD
    served.clock.advance(1)
    answer = consume(
        served, "c2", {}, pb.Usage(input_tokens=1_000_000, model="gpt-4o", cost_micro_usd=400_000)
    )
    assert (answer.cost_known, answer.cost_micro_usd) == (True, 400_000)
    cost = dim(served, "spend", pb.DIMENSION_COST_MICRO_USD)
    assert (cost.used, cost.limit) == (900_000, 1_000_000)
    served.clock.advance(1)
    denied = check(served, {}, pb.Usage(input_tokens=100_000, model="gpt-4o"))
    assert denied.decision == pb.DECISION_DENY
    assert (denied.cost_known, denied.estimated_cost_micro_usd) == (True, 250_000)
    blocker = denied.blockers[0]
    assert (blocker.dimension, blocker.requested, blocker.shortfall) == (
        pb.DIMENSION_COST_MICRO_USD,
        250_000,
        150_000,
    )


def test_wall_clock_cap_ends_the_run_at_its_deadline_over_grpc(make_served: Make) -> None:
    """A 30 min run_duration cap gives a deadline; past it usage is denied and expiry ends it."""
    served = serve_one(
        make_served, {"name": "runs", "caps": {"run_duration": "30m", "concurrency": 10}}
    )
    labels = {"agent": "a"}
    opened: pb.OpenRunResponse = served.budget.OpenRun(
        pb.OpenRunRequest(request_id="o1", labels=labels, run_id="r1", ttl=Duration(seconds=600))
    )
    assert opened.decision == pb.DECISION_ALLOW
    assert seconds(opened.deadline) == START + 1800
    assert dim(served, "runs", pb.DIMENSION_RUN_DURATION_MS).limit == 1_800_000
    beat = pb.HeartbeatResponse()
    for instant in (START + 500, START + 1000, START + 1500):
        move_to(served, instant)
        beat = served.budget.Heartbeat(pb.HeartbeatRequest(run_id="r1"))
        assert seconds(beat.deadline) == START + 1800
    assert seconds(beat.expires_at) == START + 1800  # never past the hard deadline
    move_to(served, START + 1700)
    before: pb.ReserveResponse = served.budget.Reserve(
        pb.ReserveRequest(
            request_id="q1",
            labels=labels,
            estimate=tokens(10),
            ttl=Duration(seconds=60),
            run_id="r1",
        )
    )
    assert before.decision == pb.DECISION_ALLOW
    move_to(served, START + 1801)
    denied = check(served, labels, tokens(10), run_id="r1")
    assert denied.decision == pb.DECISION_DENY
    assert [b.dimension for b in denied.blockers] == [pb.DIMENSION_RUN_DURATION_MS]
    late: pb.ReserveResponse = served.budget.Reserve(
        pb.ReserveRequest(
            request_id="q2",
            labels=labels,
            estimate=tokens(10),
            ttl=Duration(seconds=60),
            run_id="r1",
        )
    )
    assert late.decision == pb.DECISION_DENY and late.reservation_id == ""
    denials = events_so_far(served, pb.EVENT_KIND_DENIED)
    assert [(d.denied.request_id, d.denied.blocker.dimension) for d in denials] == [
        ("q2", pb.DIMENSION_RUN_DURATION_MS)
    ]
    assert ledger(served, "runs").open_runs == 1
    move_to(served, START + 1802)
    served.expire()
    ended = [e.run_ended for e in events_so_far(served, pb.EVENT_KIND_RUN_ENDED)]
    assert [(e.run_id, e.reason) for e in ended] == [("r1", pb.RUN_END_REASON_DURATION_EXCEEDED)]
    assert seconds(ended[0].duration) == 1800.0
    assert code_of(lambda: served.budget.Heartbeat(pb.HeartbeatRequest(run_id="r1"))) == (
        grpc.StatusCode.NOT_FOUND  # the run is gone
    )
    assert ledger(served, "runs").open_runs == 0
    move_to(served, START + 1803)
    after = check(served, labels, tokens(10), run_id="r1")
    assert [b.dimension for b in after.blockers] == [pb.DIMENSION_RUN_DURATION_MS]


def new_york_midnight_after_start() -> tuple[float, float]:
    """The first local midnight in New York after START, and the UTC midnight before it."""
    midnight = datetime(2027, 1, 16, tzinfo=NEW_YORK).timestamp()
    utc_midnight = datetime(2027, 1, 16, tzinfo=UTC).timestamp()
    assert utc_midnight - 60 > START
    assert midnight - utc_midnight == 5 * 3600  # EST in January
    return midnight, utc_midnight


DAILY_NEW_YORK = {
    "name": "daily",
    "caps": {"total_tokens": 1000},
    "window": {"kind": "calendar", "unit": "day", "time_zone": "America/New_York"},
}


def test_daily_limit_resets_at_midnight_in_the_configured_zone_over_grpc(
    make_served: Make,
) -> None:
    """A calendar-day window in New York resets at local midnight, not at UTC midnight."""
    midnight, utc_midnight = new_york_midnight_after_start()
    served = serve_one(make_served, DAILY_NEW_YORK)
    move_to(served, utc_midnight - 60)
    consume(served, "c1", {}, tokens(1000))
    move_to(served, utc_midnight + 60)
    assert check(served, {}, tokens(1)).decision == pb.DECISION_DENY
    move_to(served, midnight - 0.5)
    assert check(served, {}, tokens(1)).decision == pb.DECISION_DENY
    move_to(served, midnight)
    assert check(served, {}, tokens(1)).decision == pb.DECISION_ALLOW
    move_to(served, midnight + 1)
    assert dim(served, "daily", TOTAL).used == 0
    consume(served, "c2", {}, tokens(100))
    rolled = [e.window_rolled_over for e in events_so_far(served, pb.EVENT_KIND_WINDOW_ROLLED_OVER)]
    assert len(rolled) == 1
    assert (seconds(rolled[0].window_start), seconds(rolled[0].window_end)) == (
        midnight - 86_400,
        midnight,
    )
    assert (rolled[0].totals.total_tokens, rolled[0].totals.requests) == (1000, 1)
    status = ledger(served, "daily")
    assert status.totals.total_tokens == 100
    assert (seconds(status.window_start), seconds(status.window_end)) == (
        midnight,
        midnight + 86_400,
    )


def test_daily_window_of_an_untouched_ledger_rolls_on_expire_over_grpc(
    make_served: Make,
) -> None:
    """The expiry tick past local midnight rolls an idle ledger and reports the closed day."""
    midnight, _ = new_york_midnight_after_start()
    served = serve_one(make_served, DAILY_NEW_YORK)
    move_to(served, midnight - 10)
    consume(served, "c1", {}, tokens(300))
    move_to(served, midnight - 1)
    served.expire()
    assert events_so_far(served, pb.EVENT_KIND_WINDOW_ROLLED_OVER) == []
    move_to(served, midnight + 5)
    served.expire()
    rolled = [e.window_rolled_over for e in events_so_far(served, pb.EVENT_KIND_WINDOW_ROLLED_OVER)]
    assert [(r.ledger, seconds(r.window_end), r.totals.total_tokens) for r in rolled] == [
        ("daily", midnight, 300)
    ]
    status = ledger(served, "daily")
    assert status.totals.total_tokens == 0
    assert seconds(status.window_start) == midnight


def test_per_agent_limit_over_grpc(served: Served) -> None:
    """The default per-agent cap blocks the agent that reached it and no other agent."""
    assert list(stored_policy(served, "per-agent").per) == ["agent"]
    consume(served, "c1", {"agent": "a"}, tokens(2_000_000))
    assert ledger(served, "per-agent{agent=a}").state == pb.LEDGER_STATE_EXHAUSTED
    served.clock.advance(1)
    denied = check(served, {"agent": "a"}, tokens(1))
    assert denied.decision == pb.DECISION_DENY
    assert [(b.ledger, b.limit) for b in denied.blockers] == [("per-agent{agent=a}", 2_000_000)]
    assert check(served, {"agent": "b"}, tokens(1000)).decision == pb.DECISION_ALLOW


# --- run supervisor -------------------------------------------------------------------------


def test_max_ten_concurrent_runs_and_crashed_runs_free_their_slot_over_grpc(
    served: Served,
) -> None:
    """The 11th run is denied; a run without heartbeats expires and its slot is reused."""
    labels = {"agent": "a"}

    def open_run(request_id: str, run_id: str) -> pb.OpenRunResponse:
        request = pb.OpenRunRequest(
            request_id=request_id, labels=labels, run_id=run_id, ttl=Duration(seconds=60)
        )
        answer: pb.OpenRunResponse = served.budget.OpenRun(request)
        return answer

    for i in range(10):
        assert open_run(f"o{i}", f"r{i}").decision != pb.DECISION_DENY
    served.clock.advance(1)
    eleventh = open_run("o10", "r10")
    assert eleventh.decision == pb.DECISION_DENY
    assert [(b.policy, b.dimension, b.used, b.limit) for b in eleventh.blockers] == [
        ("runs", pb.DIMENSION_CONCURRENCY, 10, 10)
    ]
    assert ledger(served, "runs").open_runs == 10
    move_to(served, START + 50)
    for i in range(1, 10):  # r0 has crashed: it sends no heartbeat
        beat: pb.HeartbeatResponse = served.budget.Heartbeat(pb.HeartbeatRequest(run_id=f"r{i}"))
        assert seconds(beat.expires_at) == START + 110
    move_to(served, START + 75)
    served.expire()
    ended = [e.run_ended for e in events_so_far(served, pb.EVENT_KIND_RUN_ENDED)]
    assert [(e.run_id, e.reason) for e in ended] == [("r0", pb.RUN_END_REASON_HEARTBEAT_TIMEOUT)]
    assert seconds(ended[0].duration) == 60.0  # until its last heartbeat's ttl, not until now
    assert ledger(served, "runs").open_runs == 9
    move_to(served, START + 76)
    assert open_run("o11", "r10").decision != pb.DECISION_DENY
    assert ledger(served, "runs").open_runs == 10


def test_hard_denies_soft_warns_shadow_reports_over_grpc(make_served: Make) -> None:
    """hard: DENY, nothing held; soft: ALLOW_WITH_WARNING + Denied(SOFT); shadow: ALLOW +
    Denied(SHADOW)."""

    def served_with(enforcement: str, used: int) -> Served:
        served = serve_one(
            make_served, {"name": "cap", "caps": {"total_tokens": 100}, "enforcement": enforcement}
        )
        consume(served, "c1", {}, tokens(used))
        served.clock.advance(1)
        return served

    def reserve(served: Served, amount: int) -> pb.ReserveResponse:
        request = pb.ReserveRequest(
            request_id="r1", labels={}, estimate=tokens(amount), ttl=Duration(seconds=60)
        )
        answer: pb.ReserveResponse = served.budget.Reserve(request)
        return answer

    def denied_blockers(served: Served) -> list[pb.Blocker]:
        return [e.denied.blocker for e in events_so_far(served, pb.EVENT_KIND_DENIED)]

    hard = served_with("hard", 100)
    result = reserve(hard, 10)
    assert (result.decision, result.reservation_id) == (pb.DECISION_DENY, "")
    assert [b.enforcement for b in denied_blockers(hard)] == [pb.ENFORCEMENT_HARD]
    assert ledger(hard, "cap").reservations == 0
    assert dim(hard, "cap", TOTAL).reserved == 0

    soft = served_with("soft", 100)
    result = reserve(soft, 10)
    assert result.decision == pb.DECISION_ALLOW_WITH_WARNING
    assert result.reservation_id != "" and list(result.blockers) == []
    assert [w.enforcement for w in result.warnings] == [pb.ENFORCEMENT_SOFT]
    assert [b.enforcement for b in denied_blockers(soft)] == [pb.ENFORCEMENT_SOFT]
    assert ledger(soft, "cap").reservations == 1

    shadow = served_with("shadow", 50)
    result = reserve(shadow, 60)
    assert result.decision == pb.DECISION_ALLOW
    assert result.reservation_id != "" and list(result.blockers) == []
    # The contract: a SHADOW cap that would have blocked is an entry in `warnings`.
    assert [(w.enforcement, w.shortfall) for w in result.warnings] == [(pb.ENFORCEMENT_SHADOW, 10)]
    assert [(b.enforcement, b.shortfall) for b in denied_blockers(shadow)] == [
        (pb.ENFORCEMENT_SHADOW, 10)
    ]
    assert ledger(shadow, "cap").reservations == 1


# --- usage reports ------------------------------------------------------------------------


def test_usage_summary_per_agent_and_per_model_over_grpc(served: Served) -> None:
    """Meters keep tokens, requests, cost and average latency per agent and per model."""
    consume(
        served,
        "c1",
        {"agent": "a"},
        pb.Usage(input_tokens=1000, output_tokens=500, model="gpt-4o", latency_ms=200),
    )
    served.clock.advance(1)
    consume(
        served,
        "c2",
        {"agent": "a"},
        pb.Usage(input_tokens=2000, output_tokens=100, model="claude-sonnet-4", latency_ms=400),
    )
    served.clock.advance(1)
    consume(served, "c3", {"agent": "b"}, pb.Usage(input_tokens=10, model="gpt-4o"))
    served.clock.advance(1)
    agent_a = ledger(served, "agent-usage{agent=a}").totals
    assert (agent_a.total_tokens, agent_a.requests) == (3600, 2)
    assert agent_a.cost_micro_usd == 7500 + 7500
    assert average_latency(agent_a) == 300.0
    gpt = ledger(served, "model-usage{model=gpt-4o}").totals
    assert (gpt.total_tokens, gpt.requests, gpt.cost_micro_usd) == (1510, 2, 7525)
    assert average_latency(gpt) == 200.0  # latency 0 means unknown: not averaged
    assert average_latency(ledger(served, "agent-usage{agent=b}").totals) is None
    page: pb.ListLedgersResponse = served.budget.ListLedgers(
        pb.ListLedgersRequest(policy="model-usage")
    )
    assert sorted(s.key for s in page.ledgers) == [
        "model-usage{model=claude-sonnet-4}",
        "model-usage{model=gpt-4o}",
    ]
    assert page.next_page_token == ""


def test_closing_a_thread_returns_its_final_totals_and_frees_it_over_grpc(
    served: Served,
) -> None:
    """CloseRun returns the run's totals and closes the per-thread ledger with it."""
    labels = {"thread": "t1", "agent": "a"}
    served.budget.OpenRun(
        pb.OpenRunRequest(request_id="o1", labels=labels, run_id="run-1", ttl=Duration(seconds=60))
    )
    served.clock.advance(1)
    consume(served, "c1", labels, pb.Usage(input_tokens=100, output_tokens=20), "run-1")
    served.clock.advance(1)
    consume(served, "c2", labels, pb.Usage(input_tokens=300, output_tokens=80), "run-1")
    move_to(served, START + 30)
    result: pb.CloseRunResponse = served.budget.CloseRun(
        pb.CloseRunRequest(request_id="x1", run_id="run-1")
    )
    assert (result.totals.total_tokens, result.totals.requests) == (500, 2)
    assert result.totals.run_duration_ms == 30_000
    assert seconds(result.duration) == 30.0
    closed = {s.key: s for s in result.closed_ledgers}
    assert list(closed) == [T1]
    assert closed[T1].totals.total_tokens == 500
    events = events_so_far(served, pb.EVENT_KIND_LEDGER_CLOSED, pb.EVENT_KIND_RUN_ENDED)
    closed_events = [e.ledger_closed for e in events if e.WhichOneof("payload") == "ledger_closed"]
    assert [(e.ledger, e.reason, e.totals.total_tokens) for e in closed_events] == [
        (T1, pb.LEDGER_CLOSED_REASON_RUN_CLOSED, 500)
    ]
    ended = [e.run_ended for e in events if e.WhichOneof("payload") == "run_ended"]
    assert [e.reason for e in ended] == [pb.RUN_END_REASON_CLOSED]
    assert code_of(lambda: ledger(served, T1)) == grpc.StatusCode.NOT_FOUND
    served.clock.advance(1)
    assert ledger(served, "per-agent{agent=a}").totals.total_tokens == 500


# --- cost estimation ------------------------------------------------------------------------


def test_cost_of_a_million_input_and_output_tokens_of_a_known_model_over_grpc(
    served: Served,
) -> None:
    """1M input + 1M output tokens of gpt-4o cost 2.50 + 10.00 USD = 12.5M micro-USD."""
    million = pb.Usage(input_tokens=1_000_000, output_tokens=1_000_000, model="gpt-4o")
    estimate = check(served, {"agent": "a"}, million)
    assert (estimate.cost_known, estimate.estimated_cost_micro_usd) == (True, 12_500_000)
    answer = consume(served, "c1", {"agent": "a"}, million)
    assert (answer.cost_known, answer.cost_micro_usd) == (True, 12_500_000)
    assert ledger(served, "agent-usage{agent=a}").totals.cost_micro_usd == 12_500_000


def test_cached_input_is_priced_at_the_cached_rate_over_grpc(served: Served) -> None:
    """Cached input tokens of gpt-4o cost 1.25 USD per 1M instead of 2.50."""
    all_cached = pb.Usage(input_tokens=1_000_000, cached_input_tokens=1_000_000, model="gpt-4o")
    assert check(served, {}, all_cached).estimated_cost_micro_usd == 1_250_000
    mixed = pb.Usage(input_tokens=1_000_000, cached_input_tokens=400_000, model="gpt-4o")
    answer = consume(served, "c1", {"agent": "a"}, mixed)
    assert answer.cost_micro_usd == 600_000 * 5 // 2 + 400_000 * 5 // 4
    totals = ledger(served, "agent-usage{agent=a}").totals
    assert (totals.input_tokens, totals.cached_input_tokens) == (1_000_000, 400_000)


def test_unknown_model_is_recorded_unpriced_and_counted_over_grpc(served: Served) -> None:
    """Usage of an unknown model is recorded with its cost unknown and counted as unpriced."""
    answer = consume(
        served, "c1", {"agent": "a"}, pb.Usage(input_tokens=500, model="mystery-model-9")
    )
    assert (answer.cost_known, answer.cost_micro_usd) == (False, 0)
    recorded = [e.usage_recorded for e in events_so_far(served, pb.EVENT_KIND_USAGE_RECORDED)]
    assert [(e.request_id, e.cost_known, e.cost_micro_usd) for e in recorded] == [("c1", False, 0)]
    served.clock.advance(1)
    consume(served, "c2", {"agent": "a"}, pb.Usage(input_tokens=100, model="gpt-4o"))
    totals = ledger(served, "agent-usage{agent=a}").totals
    assert (totals.requests, totals.unpriced_requests) == (2, 1)
    assert totals.total_tokens == 600
    assert totals.cost_micro_usd == 250
    unknown = ledger(served, "model-usage{model=mystery-model-9}").totals
    assert (unknown.unpriced_requests, unknown.cost_micro_usd) == (1, 0)
