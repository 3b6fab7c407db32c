"""Invariants of the ledger core under random operation sequences.

Goal: whatever agents and operators do, in whatever order, the engine keeps its books
straight: holds never go negative and match the holds granted; hard caps are never
overshot except by usage that was already spent (Consume, the overrun of a Commit, a
late Commit); thresholds fire once per ledger, window and dimension; a retried
request_id changes nothing; meters add up to the usage recorded; an ended run frees
its slots; an invalid request is rejected before it touches anything.

Method: a hypothesis `RuleBasedStateMachine` drives one `Engine` (a small, varied policy
set: hard per-thread and per-user caps, a soft and a shadow policy, a daily calendar
window, a 60 s sliding window, a concurrency cap with a run_duration cap, meters per
agent and per model) with labels from small pools and a clock that only moves forward
(past midnight and past every ttl). Beside it runs a plain model built only from what
the test sent and the events the engine returned: holds granted, runs open, usage sent
per meter key, the part of the usage each hard ledger had to accept without a hold,
window epochs and fired thresholds. Invariants compare engine and model after every
step; operations check their own results against the model as they go.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from budgetd.core import (
    Conflict,
    Decision,
    Dimension,
    Enforcement,
    Engine,
    Event,
    InvalidArgument,
    LedgerClosed,
    LedgerClosedReason,
    LedgerExhausted,
    LedgerStatus,
    NotFound,
    Policy,
    ReservationExpired,
    RunEnded,
    RunEndReason,
    RunOpened,
    ThresholdCrossed,
    Totals,
    Usage,
    UsageRecorded,
    WindowRolledOver,
    usage_delta,
)
from budgetd.core.results import Result

START = 1_735_775_400.0  # 2025-01-01T23:50:00Z: the first midnight is 10 minutes away
HELD = 5  # total, input, output, cost, requests: what a hold holds
CONCURRENCY = int(Dimension.CONCURRENCY)
RUN_DURATION_S = 600.0
RUNS_PER_AGENT = 2
REQUEST_MEMORY_S = 86_400.0  # Limits.idempotency_max_age_s
EXPIRED_HOLD_MEMORY_S = 3_600.0  # Limits.max_reservation_ttl_s
SLIDING_SPAN_BUCKETS = 60  # a sliding window ages in 60 buckets

THREADS = ("t1", "t2", "t3")
USERS = ("u1", "u2")
AGENTS = ("a1", "a2")
MODELS = ("gpt-4o", "mystery-model")  # the second is not in the price table
RUN_IDS = ("run-1", "run-2", "run-3", "run-4", "run-5")
UNKNOWN_RESERVATION = "res-999999"

POLICY_SPECS: tuple[dict[str, Any], ...] = (
    {
        "name": "thread-cap",
        "per": ["thread"],
        "caps": {"total_tokens": 1000},
        "close_with_run": True,
        "thresholds": [
            {"percent": 50, "severity": "warning"},
            {"percent": 80, "severity": "critical"},
            {"percent": 100, "severity": "final"},
        ],
    },
    {
        "name": "user-cap",
        "per": ["user"],
        "caps": {"input_tokens": 600, "output_tokens": 400, "cost_usd": "0.004", "requests": 6},
    },
    {
        "name": "soft-all",
        "match": {"user": "*"},
        "caps": {"total_tokens": 2500},
        "enforcement": "soft",
    },
    {
        "name": "shadow-agent",
        "per": ["agent"],
        "caps": {"total_tokens": 700},
        "enforcement": "shadow",
    },
    {
        "name": "daily",
        "caps": {"total_tokens": 1500},
        "window": {"kind": "calendar", "unit": "day", "time_zone": "UTC"},
        "evictable": False,
    },
    {
        "name": "rate",
        "per": ["user"],
        "caps": {"total_tokens": 800, "requests": 5},
        "window": {"kind": "sliding", "duration": "60s"},
    },
    {
        "name": "runs",
        "per": ["agent"],
        "caps": {"concurrency": RUNS_PER_AGENT, "run_duration": "10m"},
    },
    {"name": "agent-usage", "per": ["agent"]},
    {"name": "model-usage", "per": ["model"]},
)
SPEC_BY_NAME = {spec["name"]: spec for spec in POLICY_SPECS}
HARD_POLICIES = frozenset(
    spec["name"]
    for spec in POLICY_SPECS
    if spec.get("caps") and spec.get("enforcement", "hard") == "hard"
)
METERS = frozenset(spec["name"] for spec in POLICY_SPECS if not spec.get("caps"))
SLIDING_BUCKET_S = {"rate": 60 / SLIDING_SPAN_BUCKETS}  # policy -> bucket width

TOTAL_FIELDS = (
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_micro_usd",
    "requests",
    "unpriced_requests",
    "latency_us_sum",
    "latency_samples",
    "cache_write_input_tokens",
    "reasoning_tokens",
    "unpriced_tokens",
)


def build_policies() -> list[Policy]:
    return [Policy.from_mapping(spec) for spec in POLICY_SPECS]


def ledger_keys(subject: Mapping[str, str]) -> tuple[str, ...]:
    """The keys of the ledgers a request with these labels counts in, in policy order."""
    keys = []
    for spec in POLICY_SPECS:
        match: dict[str, str] = spec.get("match", {})
        per: list[str] = spec.get("per", [])
        if all(k in subject and v in ("*", subject[k]) for k, v in match.items()) and all(
            k in subject for k in per
        ):
            inner = ",".join(f"{k}={subject[k]}" for k in per)
            keys.append(f"{spec['name']}{{{inner}}}" if per else spec["name"])
    return tuple(keys)


def policy_of(key: str) -> str:
    return key.partition("{")[0]


def trigger(limit: int, percent: int) -> int:
    """Where a threshold of `percent` fires (percent 0 stands for exhaustion at 100 %)."""
    if percent == 0:
        return max(1, limit)
    return max(1, math.ceil(limit * percent / 100))


def subject_of(labels: Mapping[str, str], usage: Usage) -> dict[str, str]:
    subject = dict(labels)
    if usage.model:
        subject["model"] = usage.model
    return subject


def meter_increment(usage: Usage, cost: int | None) -> dict[str, int]:
    return {
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cost_micro_usd": cost or 0,
        "requests": 1,
        "unpriced_requests": 1 if cost is None else 0,
        "latency_us_sum": usage.latency_us,
        "latency_samples": 1 if usage.latency_us else 0,
        "cache_write_input_tokens": usage.cache_write_input_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "unpriced_tokens": usage.input_tokens + usage.output_tokens if cost is None else 0,
    }


def totals_dict(totals: Totals) -> dict[str, int]:
    return {name: getattr(totals, name) for name in TOTAL_FIELDS}


# --- strategies ------------------------------------------------------------------------


@st.composite
def label_sets(draw: st.DrawFn) -> dict[str, str]:
    """Mostly full label sets; sometimes a label is missing so fewer policies match."""
    labels = {}
    for key, pool in (("thread", THREADS), ("user", USERS), ("agent", AGENTS)):
        value = draw(st.sampled_from((*pool, *pool, None)))
        if value is not None:
            labels[key] = value
    return labels


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    input_tokens = draw(st.integers(0, 450))
    output_tokens = draw(st.integers(0, 300))
    cached = draw(st.integers(0, input_tokens))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_input_tokens=draw(st.integers(0, input_tokens - cached)),
        reasoning_tokens=draw(st.integers(0, output_tokens)),
        cost_micro_usd=draw(st.none() | st.none() | st.integers(0, 3000)),
        model=draw(st.sampled_from(("", *MODELS, MODELS[0]))),
        latency_us=draw(st.sampled_from((0, 0, 120, 150_500, 2_500_000))),
    )


ADVANCES = st.one_of(
    st.integers(0, 20).map(float),
    st.sampled_from((0.25, 299.5, 601.0, 3_601.0, 86_401.0, 2 * 86_400.0)),
)
INVALID_KINDS = (
    "reserve_bad_label_key",
    "reserve_uppercase_label_key",
    "reserve_too_many_tokens",
    "reserve_ttl_zero",
    "reserve_ttl_too_long",
    "consume_too_many_tokens",
    "consume_cached_above_input",
    "consume_empty_request_id",
    "commit_negative_tokens",
    "open_run_bad_label_key",
    "open_run_run_id_with_space",
)


# --- the model -------------------------------------------------------------------------


@dataclass
class Hold:
    labels: dict[str, str]
    estimate: Usage
    amounts: tuple[int, ...]  # HELD entries
    keys: tuple[str, ...]
    expires_at: float


@dataclass
class OpenRun:
    labels: dict[str, str]
    ttl_s: float
    last_seen: float
    deadline: float | None  # the hard run_duration cap, when "runs" matched
    keys: tuple[str, ...]

    def due(self) -> float:
        silent = self.last_seen + self.ttl_s
        return silent if self.deadline is None else min(silent, self.deadline)


@dataclass
class Done:
    """A remembered request: how to send it again and what it first answered."""

    op: str
    at: float
    call: Callable[[float], tuple[Result, list[Event]]]
    result: Result


@dataclass
class Slack:
    """Usage one hard ledger accepted without a matching hold, per held dimension."""

    bucket: int | None  # sliding windows age it out per bucket
    amounts: list[int] = field(default_factory=lambda: [0] * HELD)


class BudgetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(build_policies())
        self.now = START
        self.request_serial = 0
        self.holds: dict[str, Hold] = {}
        self.expired: dict[str, tuple[Hold, float]] = {}  # late-commit memory
        self.runs: dict[str, OpenRun] = {}
        self.ended: dict[str, RunEndReason] = {}
        self.done: dict[str, Done] = {}
        self.slack: dict[str, list[Slack]] = {}
        self.sent: dict[str, dict[str, int]] = {}  # meter key -> usage the test sent
        self.recorded: dict[str, dict[str, int]] = {}  # meter key -> UsageRecorded sums
        self.epoch: dict[str, int] = {}  # ledger key -> windows seen
        # (ledger, dimension, percent or 0 for exhaustion, epoch) -> may fire again
        self.fired: dict[tuple[str, int, int, int], bool] = {}

    # --- helpers -----------------------------------------------------------------------

    def next_request_id(self) -> str:
        self.request_serial += 1
        return f"req-{self.request_serial}"

    def statuses(self) -> list[LedgerStatus]:
        found: list[LedgerStatus] = []
        token = ""
        while True:
            page = self.engine.list_ledgers(self.now, page_size=1000, page_token=token)
            found.extend(page.ledgers)
            token = page.next_page_token
            if not token:
                return found

    def remember(
        self, request_id: str, op: str, call: Callable[[float], Any], result: Result
    ) -> None:
        self.done[request_id] = Done(op, self.now, call, result)

    def absorb(self, events: list[Event]) -> None:
        """Fold one operation's events, in order, into the model."""
        for event in events:
            if isinstance(event, WindowRolledOver):
                self.new_window(event.ledger)
            elif isinstance(event, LedgerClosed):
                self.new_window(event.ledger)
                self.sent.pop(event.ledger, None)
                self.recorded.pop(event.ledger, None)
            elif isinstance(event, ThresholdCrossed):
                self.note_fired(event.ledger, event.policy, int(event.dimension), event.percent)
            elif isinstance(event, LedgerExhausted):
                self.note_fired(event.ledger, event.policy, int(event.dimension), 0)
            elif isinstance(event, UsageRecorded):
                increment = meter_increment(event.usage, event.cost_micro_usd)
                for key, _ in event.ledgers:
                    if policy_of(key) in METERS:
                        tally = self.recorded.setdefault(key, dict.fromkeys(TOTAL_FIELDS, 0))
                        for name, amount in increment.items():
                            tally[name] += amount

    def new_window(self, key: str) -> None:
        self.epoch[key] = self.epoch.get(key, 0) + 1
        self.slack.pop(key, None)

    def note_fired(self, key: str, policy: str, dimension: int, percent: int) -> None:
        """Each threshold fires at most once per ledger, window and dimension; a gauge
        (open runs, a sliding window) may fire again only after falling back below."""
        fired_key = (key, dimension, percent, self.epoch.get(key, 0))
        gauge = dimension == CONCURRENCY or policy in SLIDING_BUCKET_S
        if fired_key in self.fired:
            assert gauge and self.fired[fired_key], (
                f"threshold fired twice in one window: {fired_key} "
                f"(gauge={gauge}, fell back since={self.fired[fired_key]})"
            )
        self.fired[fired_key] = False

    def add_slack(self, keys: tuple[str, ...], amounts: list[int]) -> None:
        for key in keys:
            if policy_of(key) not in HARD_POLICIES or not any(amounts):
                continue
            width = SLIDING_BUCKET_S.get(policy_of(key))
            bucket = None if width is None else int(self.now // width)
            self.slack.setdefault(key, []).append(Slack(bucket, list(amounts)))

    def current_slack(self, key: str) -> list[int]:
        total = [0] * HELD
        width = SLIDING_BUCKET_S.get(policy_of(key))
        cutoff = None if width is None else int(self.now // width) - SLIDING_SPAN_BUCKETS
        for entry in self.slack.get(key, []):
            if cutoff is not None and entry.bucket is not None and entry.bucket <= cutoff:
                continue  # aged out of the sliding window together with its usage
            for i in range(HELD):
                total[i] += entry.amounts[i]
        return total

    def add_sent(self, keys: tuple[str, ...], usage: Usage, cost: int | None) -> None:
        increment = meter_increment(usage, cost)
        for key in keys:
            if policy_of(key) in METERS:
                tally = self.sent.setdefault(key, dict.fromkeys(TOTAL_FIELDS, 0))
                for name, amount in increment.items():
                    tally[name] += amount

    def check_usage_recorded(
        self, events: list[Event], subject: Mapping[str, str], usage: Usage, cost: int | None
    ) -> None:
        recorded = [e for e in events if isinstance(e, UsageRecorded)]
        assert len(recorded) == 1, recorded
        assert dict(recorded[0].labels) == dict(subject)
        assert recorded[0].usage == usage
        assert recorded[0].cost_micro_usd == cost
        assert tuple(key for key, _ in recorded[0].ledgers) == ledger_keys(subject)

    def assert_unchanged(self, before: dict[str, Any], what: str) -> None:
        after = self.engine.export_state()
        assert after == before, f"{what} changed the engine's state"

    def cost_of(self, usage: Usage) -> int | None:
        return self.engine.prices.cost_of(usage)

    def run_gate_denies(self, run_id: str) -> bool | None:
        """True when usage estimated within `run_id` must be denied (past its hard
        run_duration cap), False when not, None when the run id must be NotFound."""
        if not run_id:
            return False
        run = self.runs.get(run_id)
        if run is not None:
            return run.deadline is not None and run.deadline <= self.now
        if self.ended.get(run_id) is RunEndReason.DURATION_EXCEEDED:
            return True
        return None

    def closing_with_run(self, keys: set[str]) -> set[str]:
        """Ledgers of close_with_run policies among `keys` left idle by the model."""
        closing = set()
        for key in keys:
            if not SPEC_BY_NAME[policy_of(key)].get("close_with_run"):
                continue
            held = any(key in hold.keys for hold in self.holds.values())
            running = any(key in run.keys for run in self.runs.values())
            if not held and not running:
                closing.add(key)
        return closing

    # --- time --------------------------------------------------------------------------

    @rule(seconds=ADVANCES, sweep=st.booleans())
    def advance(self, seconds: float, sweep: bool) -> None:
        """Move the clock forward; with `sweep`, run the expiry timer as the daemon would."""
        self.now += seconds
        if sweep:
            self.expire()

    @rule()
    def expire(self) -> None:
        now = self.now
        due_holds = {rid for rid, hold in self.holds.items() if hold.expires_at <= now}
        due_runs = {rid for rid, run in self.runs.items() if run.due() <= now}
        events = self.engine.expire(now)
        self.absorb(events)
        expired = {e.reservation_id for e in events if isinstance(e, ReservationExpired)}
        assert expired == due_holds, "expire() must drop exactly the holds past their ttl"
        ended = {e.run_id: e.reason for e in events if isinstance(e, RunEnded)}
        assert set(ended) == due_runs, "expire() must end exactly the runs that are due"
        for rid in due_holds:
            self.expired[rid] = (self.holds.pop(rid), now)
        ended_keys: set[str] = set()
        for run_id, reason in ended.items():
            run = self.runs.pop(run_id)
            silent = run.last_seen + run.ttl_s
            timed_out = run.deadline is None or silent < run.deadline
            wanted = RunEndReason.HEARTBEAT_TIMEOUT if timed_out else RunEndReason.DURATION_EXCEEDED
            assert reason is wanted, (run_id, reason, wanted)
            self.ended[run_id] = reason
            ended_keys.update(run.keys)
        closed = {
            e.ledger
            for e in events
            if isinstance(e, LedgerClosed) and e.reason is LedgerClosedReason.RUN_CLOSED
        }
        assert closed == self.closing_with_run(ended_keys)
        self.expired = {
            rid: item
            for rid, item in self.expired.items()
            if item[1] >= now - EXPIRED_HOLD_MEMORY_S
        }
        self.done = {rid: d for rid, d in self.done.items() if d.at >= now - REQUEST_MEMORY_S}

    # --- holds -------------------------------------------------------------------------

    @rule(
        labels=label_sets(),
        estimate=usages(),
        ttl_s=st.sampled_from((1.0, 1.0, 30.0, 300.0, 3_600.0)),
        run_id=st.sampled_from(("", "", "", *RUN_IDS)),
    )
    def reserve(self, labels: dict[str, str], estimate: Usage, ttl_s: float, run_id: str) -> None:
        request_id = self.next_request_id()
        gate = self.run_gate_denies(run_id)

        def call(now: float) -> Any:
            return self.engine.reserve(labels, estimate, ttl_s, request_id, now, run_id)

        if gate is None:
            before = self.engine.export_state()
            with pytest.raises(NotFound):
                call(self.now)
            self.assert_unchanged(before, "a reserve in an unknown run")
            return
        result, events = call(self.now)
        self.absorb(events)
        assert (result.decision is Decision.DENY) == bool(result.blockers)
        assert all(b.enforcement is Enforcement.HARD for b in result.blockers)
        assert all(w.enforcement is not Enforcement.HARD for w in result.warnings)
        if gate:
            assert result.decision is Decision.DENY, "a run past its hard duration cap"
        subject = subject_of(labels, estimate)
        keys = ledger_keys(subject)
        assert tuple(key for key, _ in result.ledgers) == keys
        cost = self.cost_of(estimate)
        assert result.cost_micro_usd == cost
        if result.decision is not Decision.DENY:
            assert result.expires_at == self.now + ttl_s
            amounts = usage_delta(estimate, cost)[:HELD]
            hold = Hold(dict(labels), estimate, amounts, keys, self.now + ttl_s)
            self.holds[result.reservation_id] = hold
        else:
            assert result.reservation_id == ""
        self.remember(request_id, "reserve", call, result)

    def reservation_ids(self) -> list[str]:
        return [*sorted(self.holds), *sorted(self.expired), UNKNOWN_RESERVATION]

    @rule(data=st.data(), actual=usages())
    def commit(self, data: st.DataObject, actual: Usage) -> None:
        reservation_id = data.draw(st.sampled_from(self.reservation_ids()), "reservation_id")
        request_id = self.next_request_id()
        sent = actual  # a retry repeats the call as sent (`actual` is rebound below)

        def call(now: float) -> Any:
            return self.engine.commit(reservation_id, sent, request_id, now)

        hold = self.holds.get(reservation_id)
        late = hold is None
        if hold is None:
            if reservation_id not in self.expired:
                before = self.engine.export_state()
                with pytest.raises(NotFound):
                    call(self.now)
                self.assert_unchanged(before, "a commit of an unknown reservation")
                return
            hold = self.expired[reservation_id][0]
        result, events = call(self.now)
        # What is recorded: the actual usage, with the estimate's model when it names none.
        actual = replace(
            actual,
            model=actual.model or hold.estimate.model,
            provider=actual.provider or hold.estimate.provider,
        )
        self.absorb(events)
        assert result.late == late
        cost = self.cost_of(actual)
        assert result.cost_micro_usd == cost
        subject = subject_of(hold.labels, actual)
        self.check_usage_recorded(events, subject, actual, cost)
        delta = usage_delta(actual, cost)
        held = usage_delta(hold.estimate, self.cost_of(hold.estimate))
        overruns = [(d, held[d], delta[d]) for d in range(4) if delta[d] > held[d]]
        assert [(int(o.dimension), o.reserved, o.actual) for o in result.overruns] == overruns
        keys = ledger_keys(subject)
        if late:  # the hold is gone: all of the usage arrives unannounced
            self.add_slack(keys, list(delta[:HELD]))
            del self.expired[reservation_id]
        else:
            self.add_slack(keys, [max(0, delta[i] - held[i]) for i in range(HELD)])
            del self.holds[reservation_id]
        self.add_sent(keys, actual, cost)
        self.remember(request_id, "commit", call, result)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        reservation_id = data.draw(st.sampled_from(self.reservation_ids()), "reservation_id")
        request_id = self.next_request_id()

        def call(now: float) -> Any:
            return self.engine.release(reservation_id, request_id, now)

        if reservation_id not in self.holds and reservation_id not in self.expired:
            before = self.engine.export_state()
            with pytest.raises(NotFound):
                call(self.now)
            self.assert_unchanged(before, "a release of an unknown reservation")
            return
        result, events = call(self.now)
        assert events == []
        assert result.released == (reservation_id in self.holds)
        self.holds.pop(reservation_id, None)
        self.expired.pop(reservation_id, None)
        self.remember(request_id, "release", call, result)

    @rule(labels=label_sets(), usage=usages(), run_id=st.sampled_from(("", "", *RUN_IDS)))
    def consume(self, labels: dict[str, str], usage: Usage, run_id: str) -> None:
        request_id = self.next_request_id()

        def call(now: float) -> Any:
            return self.engine.consume(labels, usage, request_id, now, run_id)

        result, events = call(self.now)
        self.absorb(events)
        subject = subject_of(labels, usage)
        cost = self.cost_of(usage)
        assert result.cost_micro_usd == cost
        self.check_usage_recorded(events, subject, usage, cost)
        keys = ledger_keys(subject)
        assert tuple(key for key, _ in result.ledgers) == keys
        self.add_slack(keys, list(usage_delta(usage, cost)[:HELD]))
        self.add_sent(keys, usage, cost)
        self.remember(request_id, "consume", call, result)

    # --- runs --------------------------------------------------------------------------

    @rule(
        labels=label_sets(),
        run_id=st.sampled_from(RUN_IDS),
        ttl_s=st.sampled_from((5.0, 60.0, 600.0, 3_600.0)),
    )
    def open_run(self, labels: dict[str, str], run_id: str, ttl_s: float) -> None:
        request_id = self.next_request_id()

        def call(now: float) -> Any:
            return self.engine.open_run(labels, run_id, ttl_s, request_id, now)

        if run_id in self.runs:
            before = self.engine.export_state()
            with pytest.raises(Conflict):
                call(self.now)
            self.assert_unchanged(before, "opening a run that is already open")
            return
        keys = ledger_keys(labels)
        runs_key = next((key for key in keys if policy_of(key) == "runs"), None)
        open_here = sum(1 for run in self.runs.values() if runs_key in run.keys)
        result, events = call(self.now)
        self.absorb(events)
        concurrency_blockers = [b for b in result.blockers if b.dimension == CONCURRENCY]
        full = runs_key is not None and open_here >= RUNS_PER_AGENT
        assert bool(concurrency_blockers) == full, (open_here, result.blockers)
        assert (result.decision is Decision.DENY) == bool(result.blockers)
        assert tuple(key for key, _ in result.ledgers) == keys
        if result.decision is not Decision.DENY:
            deadline = None if runs_key is None else self.now + RUN_DURATION_S
            run = OpenRun(dict(labels), ttl_s, self.now, deadline, keys)
            assert result.deadline == deadline
            assert result.expires_at == run.due()
            assert any(isinstance(e, RunOpened) and e.run_id == run_id for e in events)
            self.runs[run_id] = run
            self.ended.pop(run_id, None)
        self.remember(request_id, "open_run", call, result)

    @rule(run_id=st.sampled_from(RUN_IDS))
    def heartbeat(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is None:
            before = self.engine.export_state()
            with pytest.raises(NotFound):
                self.engine.heartbeat(run_id, self.now)
            self.assert_unchanged(before, "a heartbeat of a run that is not open")
            return
        result, events = self.engine.heartbeat(run_id, self.now)
        assert events == []
        run.last_seen = max(run.last_seen, self.now)
        assert result.expires_at == run.due()
        assert result.deadline == run.deadline

    @rule(run_id=st.sampled_from(RUN_IDS))
    def close_run(self, run_id: str) -> None:
        request_id = self.next_request_id()

        def call(now: float) -> Any:
            return self.engine.close_run(run_id, request_id, now)

        if run_id not in self.runs:
            before = self.engine.export_state()
            with pytest.raises(NotFound):
                call(self.now)
            self.assert_unchanged(before, "closing a run that is not open")
            return
        result, events = call(self.now)
        self.absorb(events)
        run = self.runs.pop(run_id)
        ended = [e for e in events if isinstance(e, RunEnded)]
        assert [(e.run_id, e.reason) for e in ended] == [(run_id, RunEndReason.CLOSED)]
        closed = {status.key for status in result.closed_ledgers}
        assert closed == self.closing_with_run(set(run.keys))
        self.ended[run_id] = RunEndReason.CLOSED
        self.remember(request_id, "close_run", call, result)

    # --- administration, retries and bad input ---------------------------------------

    @rule(data=st.data())
    def reset_ledger(self, data: st.DataObject) -> None:
        keys = sorted(status.key for status in self.statuses())
        key = data.draw(st.sampled_from([*keys, "thread-cap{thread=nobody}"]), "key")
        request_id = self.next_request_id()

        def call(now: float) -> Any:
            return self.engine.reset_ledger(key, request_id, now)

        if key not in keys:
            before = self.engine.export_state()
            with pytest.raises(NotFound):
                call(self.now)
            self.assert_unchanged(before, "resetting an unknown ledger")
            return
        result, events = call(self.now)
        self.absorb(events)
        assert result.final.key == key
        resets = [e for e in events if isinstance(e, LedgerClosed)]
        assert [(e.ledger, e.reason) for e in resets] == [(key, LedgerClosedReason.RESET)]
        self.remember(request_id, "reset_ledger", call, result)

    @precondition(lambda self: bool(self.done))
    @rule(data=st.data())
    def repeat_request(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.done)), "request_id")
        done = self.done[request_id]
        before = self.engine.export_state()
        result, events = done.call(self.now)
        self.assert_unchanged(before, f"a repeated {done.op} {request_id}")
        assert events == []
        assert result.replayed
        assert result == replace(done.result, replayed=True)

    @precondition(lambda self: bool(self.done))
    @rule(data=st.data())
    def reuse_request_id_for_another_op(self, data: st.DataObject) -> None:
        request_id = data.draw(st.sampled_from(sorted(self.done)), "request_id")
        op = self.done[request_id].op
        before = self.engine.export_state()
        with pytest.raises(Conflict):
            if op == "consume":
                self.engine.release(UNKNOWN_RESERVATION, request_id, self.now)
            else:
                self.engine.consume({"agent": "a1"}, Usage(input_tokens=1), request_id, self.now)
        self.assert_unchanged(before, f"reusing the request_id of a {op} for another op")

    @rule(kind=st.sampled_from(INVALID_KINDS), labels=label_sets())
    def invalid_request(self, kind: str, labels: dict[str, str]) -> None:
        engine, now, rid = self.engine, self.now, self.next_request_id()
        huge = Usage(input_tokens=10**12 + 1)
        small = Usage(input_tokens=10)
        calls: dict[str, tuple[str, Callable[[], object]]] = {
            "reserve_bad_label_key": (
                "labels",
                lambda: engine.reserve({**labels, "bad key": "x"}, small, 30.0, rid, now),
            ),
            "reserve_uppercase_label_key": (
                "labels",
                lambda: engine.reserve({"Agent": "a1"}, small, 30.0, rid, now),
            ),
            "reserve_too_many_tokens": (
                "estimate.input_tokens",
                lambda: engine.reserve(labels, huge, 30.0, rid, now),
            ),
            "reserve_ttl_zero": ("ttl", lambda: engine.reserve(labels, small, 0.0, rid, now)),
            "reserve_ttl_too_long": (
                "ttl",
                lambda: engine.reserve(labels, small, 3_601.0, rid, now),
            ),
            "consume_too_many_tokens": (
                "usage.input_tokens",
                lambda: engine.consume(labels, huge, rid, now),
            ),
            "consume_cached_above_input": (
                "usage.cached_input_tokens",
                lambda: engine.consume(
                    labels, Usage(input_tokens=1, cached_input_tokens=2), rid, now
                ),
            ),
            "consume_empty_request_id": (
                "request_id",
                lambda: engine.consume(labels, small, "", now),
            ),
            "commit_negative_tokens": (
                "actual.output_tokens",
                lambda: engine.commit(
                    next(iter(self.holds), UNKNOWN_RESERVATION), Usage(output_tokens=-1), rid, now
                ),
            ),
            "open_run_bad_label_key": (
                "labels",
                lambda: engine.open_run({"UPPER": "x"}, "run-x", 60.0, rid, now),
            ),
            "open_run_run_id_with_space": (
                "run_id",
                lambda: engine.open_run(labels, "run x", 60.0, rid, now),
            ),
        }
        field_prefix, bad_call = calls[kind]
        before = self.engine.export_state()
        with pytest.raises(InvalidArgument) as raised:
            bad_call()
        assert raised.value.field.startswith(field_prefix), (kind, raised.value.field)
        self.assert_unchanged(before, f"an invalid request ({kind})")

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def a_remembered_status_is_the_status_now(self) -> None:
        """GetLedger and Check answer a remembered status object while the ledger is
        unchanged (Engine._status): it must equal the one built afresh now."""
        for status in self.statuses():
            assert self.engine.get_ledger(status.key, self.now) == status, status.key
            assert self.engine.get_ledger(status.key, self.now) == status, status.key

    @invariant()
    def reserved_is_never_negative(self) -> None:
        for status in self.statuses():
            for dimension in status.dimensions:
                assert dimension.reserved >= 0, (status.key, dimension)
        for ledger in self.engine.export_state()["ledgers"]:
            assert min(ledger["reserved"]) >= 0 and ledger["holds"] >= 0, ledger

    @invariant()
    def holds_match_the_reservations_granted(self) -> None:
        assert self.engine.reservation_count == len(self.holds)
        for status in self.statuses():
            mine = [hold for hold in self.holds.values() if status.key in hold.keys]
            assert status.reservations == len(mine), status.key
            for dimension in status.dimensions:
                if dimension.dimension < HELD:
                    wanted = sum(hold.amounts[dimension.dimension] for hold in mine)
                    assert dimension.reserved == wanted, (status.key, dimension)

    @invariant()
    def hard_caps_hold_but_for_recorded_overruns_and_consumes(self) -> None:
        for status in self.statuses():
            if status.enforcement is not Enforcement.HARD:
                continue
            slack = self.current_slack(status.key)
            for dimension in status.dimensions:
                d = int(dimension.dimension)
                if d < HELD:
                    assert dimension.used + dimension.reserved <= dimension.limit + slack[d], (
                        f"{status.key} {dimension.dimension.name}: used {dimension.used} + "
                        f"reserved {dimension.reserved} > limit {dimension.limit} + "
                        f"unheld usage {slack[d]}"
                    )
                elif d == CONCURRENCY:
                    assert dimension.used <= dimension.limit, (status.key, dimension)

    @invariant()
    def gauges_rearm_only_after_falling_back(self) -> None:
        """Bookkeeping for `note_fired`: a gauge threshold that fired may fire again once
        its value has been seen below the trigger."""
        values = {
            (status.key, int(d.dimension)): (d.used, d.limit)
            for status in self.statuses()
            for d in status.dimensions
        }
        for fired_key, rearmed in self.fired.items():
            key, dimension, percent, epoch = fired_key
            if rearmed or epoch != self.epoch.get(key, 0):
                continue
            if dimension != CONCURRENCY and policy_of(key) not in SLIDING_BUCKET_S:
                continue
            used, limit = values.get((key, dimension), (0, 0))
            if (key, dimension) not in values or used < trigger(limit, percent):
                self.fired[fired_key] = True

    @invariant()
    def meters_equal_the_usage_recorded(self) -> None:
        zero = dict.fromkeys(TOTAL_FIELDS, 0)
        for key in sorted(self.sent.keys() | self.recorded.keys()):
            sent = self.sent.get(key, zero)
            assert self.recorded.get(key, zero) == sent, f"UsageRecorded events for {key}"
            try:
                totals = totals_dict(self.engine.get_ledger(key, self.now).totals)
            except NotFound:
                totals = zero
            assert totals == sent, f"meter {key}"

    @invariant()
    def ended_runs_hold_no_slot(self) -> None:
        assert self.engine.run_count == len(self.runs)
        statuses = {status.key: status for status in self.statuses()}
        for key, status in statuses.items():
            mine = sum(1 for run in self.runs.values() if key in run.keys)
            assert status.open_runs == mine, f"{key}: {status.open_runs} open, model {mine}"
        for run_id, run in self.runs.items():
            missing = [key for key in run.keys if key not in statuses]
            assert not missing, f"{run_id} is open but its ledgers {missing} are gone"


def test_budget_invariants() -> None:
    run_state_machine_as_test(
        BudgetMachine,
        settings=settings(max_examples=100, stateful_step_count=60, deadline=None),
    )
