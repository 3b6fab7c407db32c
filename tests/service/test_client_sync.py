"""The blocking SDK (`BudgetClient`) against a real in-process server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from budgetd.core import Limits
from budgetd.v1 import budget_pb2 as pb
from budgetd_client import (
    AlreadyExists,
    BudgetClient,
    BudgetdError,
    BudgetdUnavailable,
    BudgetExhausted,
    CheckResult,
    ConsumeResult,
    Crossing,
    Decision,
    Dimension,
    DimensionStatus,
    Enforcement,
    Event,
    EventKind,
    InvalidRequest,
    LedgerState,
    NotFound,
    Overrun,
    Reservation,
    RunEndReason,
    ServerBusy,
    Severity,
    Usage,
)
from budgetd_client.events import Gap, RunEnded, ThresholdCrossed, UsageRecorded
from tests.service.client_support import (
    FAST,
    THREAD,
    THREAD_KEY,
    Flaky,
    Seen,
    burst,
    ledger,
    subscribers,
    wait_until,
)
from tests.service.support import Served


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture
def client(served: Served) -> Iterator[BudgetClient]:
    with BudgetClient(served.target, backoff=FAST) as client:
        yield client


# --- consume and check -----------------------------------------------------------------


def test_consume_returns_typed_briefs_crossings_and_cost(
    served: Served, client: BudgetClient
) -> None:
    result = client.consume(THREAD, Usage(80_000, 500, model="gpt-4o"))
    assert isinstance(result, ConsumeResult)
    states = {brief.key: brief.state for brief in result.ledgers}
    assert states[THREAD_KEY] is LedgerState.warning
    assert states["model-usage{model=gpt-4o}"] is LedgerState.ok
    assert result.crossings == (
        Crossing(
            "per-thread",
            THREAD_KEY,
            Dimension.total_tokens,
            75,
            Severity.warning,
            80_500,
            100_000,
            percent_used=80,
            remaining=19_500,
        ),
    )
    assert result.cost_known and result.cost_micro_usd > 0
    assert result.cost_usd == Decimal(result.cost_micro_usd) / 1_000_000
    assert not result.replayed and not result.offline
    assert ledger(served).totals.total_tokens == 80_500


def test_check_returns_the_decision_and_blockers_without_raising(client: BudgetClient) -> None:
    client.consume(THREAD, Usage(90_000))
    fits = client.check(THREAD, Usage(5_000))
    assert fits.allowed and fits.decision is not Decision.deny
    denied = client.check(THREAD, Usage(20_000))
    assert isinstance(denied, CheckResult)
    assert denied.decision is Decision.deny and not denied.allowed
    (blocker,) = denied.blockers
    assert (blocker.policy, blocker.ledger, blocker.dimension) == (
        "per-thread",
        THREAD_KEY,
        Dimension.total_tokens,
    )
    assert (blocker.used, blocker.requested, blocker.limit, blocker.shortfall) == (
        90_000,
        20_000,
        100_000,
        10_000,
    )
    assert blocker.enforcement is Enforcement.hard
    status = next(s for s in denied.ledgers if s.key == THREAD_KEY)
    assert status.state is LedgerState.critical
    tokens = status.dimension(Dimension.total_tokens)
    assert tokens is not None and (tokens.used, tokens.remaining) == (90_000, 10_000)


# --- reserve ---------------------------------------------------------------------------


def test_a_denied_reserve_raises_budget_exhausted_naming_the_blocker(
    served: Served, client: BudgetClient
) -> None:
    client.consume(THREAD, Usage(90_000))
    with pytest.raises(BudgetExhausted) as raised:
        client.reserve(THREAD, Usage(20_000))
    error = raised.value
    assert (error.policy, error.ledger, error.dimension, error.used, error.limit) == (
        "per-thread",
        THREAD_KEY,
        Dimension.total_tokens,
        90_000,
        100_000,
    )
    assert [b.shortfall for b in error.blockers] == [10_000]
    assert THREAD_KEY in str(error)
    assert ledger(served).dimensions[0].reserved == 0


def test_the_reserve_block_commits_the_actual_usage(served: Served, client: BudgetClient) -> None:
    with client.reserve(THREAD, Usage(1000, 1000, model="gpt-4o"), ttl_s=30) as held:
        assert isinstance(held, Reservation)
        assert held.decision is Decision.allow and not held.offline
        assert held.expires_at == at(served.clock.now + 30)
        assert ledger(served).dimensions[0].reserved == 2000
        done = held.commit(Usage(1500, 700))  # the estimate's model applies
    assert done.overruns == (
        Overrun(Dimension.total_tokens, 2000, 2200),
        Overrun(Dimension.input_tokens, 1000, 1500),
    )
    assert done.cost_known and held.commit_result is done
    status = ledger(served)
    assert (status.dimensions[0].reserved, status.reservations) == (0, 0)
    assert (status.totals.total_tokens, status.totals.requests) == (2200, 1)


def test_the_reserve_block_releases_on_an_exception(served: Served, client: BudgetClient) -> None:
    with pytest.raises(RuntimeError, match="model call failed"):  # noqa: SIM117
        with client.reserve(THREAD, Usage(1000)) as held:
            raise RuntimeError("model call failed")
    assert held.released
    status = ledger(served)
    assert (status.dimensions[0].reserved, status.reservations, status.totals.requests) == (0, 0, 0)


def test_the_reserve_block_releases_when_left_without_commit(
    served: Served, client: BudgetClient
) -> None:
    with client.reserve(THREAD, Usage(1000)) as held:
        assert ledger(served).dimensions[0].reserved == 1000
    assert held.released and held.done
    status = ledger(served)
    assert (status.dimensions[0].reserved, status.totals.requests) == (0, 0)


def test_reserve_as_a_plain_call_then_commit_or_release(
    served: Served, client: BudgetClient
) -> None:
    first = client.reserve(THREAD, Usage(100))
    second = client.reserve(THREAD, Usage(200))
    assert ledger(served).dimensions[0].reserved == 300
    client.commit(first.id, Usage(50))
    assert second.release() is True
    with pytest.raises(BudgetdError, match="already released"):
        second.commit(Usage(1))
    status = ledger(served)
    assert (status.dimensions[0].reserved, status.totals.total_tokens) == (0, 50)


# --- runs ------------------------------------------------------------------------------


def test_open_heartbeat_and_close_a_run(served: Served, client: BudgetClient) -> None:
    run = client.open_run(THREAD, ttl_s=60)
    assert len(run.run_id) == 32 and run.decision is Decision.allow
    assert run.expires_at == at(served.clock.now + 60)
    assert run.deadline == at(served.clock.now + 120 * 60)
    client.consume(THREAD, Usage(10, 5), run_id=run.run_id)
    served.clock.advance(30)
    assert client.heartbeat(run.run_id).expires_at == at(served.clock.now + 60)
    served.clock.advance(12)
    closed = client.close_run(run.run_id)
    assert (closed.run_id, closed.totals.total_tokens, closed.duration_s) == (run.run_id, 15, 42)
    assert [s.key for s in closed.closed_ledgers] == [THREAD_KEY]
    with pytest.raises(NotFound):
        client.heartbeat(run.run_id)


def test_the_run_block_heartbeats_in_the_background_and_closes_with_totals(
    served: Served, client: BudgetClient
) -> None:
    with client.run(THREAD, run_id="job-1", ttl_s=60, heartbeat_every_s=0.01) as run:
        assert run.id == "job-1" and run.expires_at == at(served.clock.now + 60)
        served.clock.advance(50)
        wait_until(lambda: run.expires_at == at(served.clock.now + 60), "a heartbeat at t+50")
        served.clock.advance(20)  # past the opening's expiry: only the heartbeat keeps it
        served.expire()
        run.consume(Usage(100, 50))
    assert run.heartbeats >= 1
    assert run.totals is not None
    assert (run.totals.totals.total_tokens, run.totals.duration_s) == (150, 70)
    assert not [t for t in threading.enumerate() if t.name.startswith("budgetd-heartbeat")]


def test_a_failed_heartbeat_is_logged_and_retried(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    with BudgetClient(served.target, retries=0, interceptors=[Flaky(seen)]) as client:
        with client.run(THREAD, heartbeat_every_s=0.01) as run:
            seen.mode, seen.faults = "drop", 1
            wait_until(lambda: run.heartbeats >= 1, "a heartbeat after the failed one")
        assert run.totals is not None
    assert "heartbeat of run" in caplog.text and "will retry" in caplog.text


def test_a_run_gone_from_the_server_stops_heartbeats_and_closes_without_totals(
    served: Served, client: BudgetClient, caplog: pytest.LogCaptureFixture
) -> None:
    with client.run(THREAD, heartbeat_every_s=0.01) as run:
        served.budget.CloseRun(pb.CloseRunRequest(request_id="elsewhere", run_id=run.id))
        wait_until(lambda: "heartbeats stop" in caplog.text, "the heartbeat thread to give up")
    assert run.totals is None  # closing a run the daemon no longer has is not an error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "heartbeats stop" in errors[0].message
    assert "treated as closed" in caplog.records[-1].message


def test_a_denied_run_raises_budget_exhausted(client: BudgetClient) -> None:
    for i in range(10):
        client.open_run({"agent": "a"}, run_id=f"r{i}")
    with pytest.raises(BudgetExhausted) as raised, client.run({"agent": "a"}):
        pass
    assert (raised.value.policy, raised.value.dimension) == ("runs", Dimension.concurrency)
    assert (raised.value.used, raised.value.limit) == (10, 10)


# --- ledgers ---------------------------------------------------------------------------


def test_get_ledger_and_list_ledgers_over_several_pages(
    served: Served, client: BudgetClient
) -> None:
    for i in range(120):
        client.consume({"agent": "a", "thread": f"t{i:03}"}, Usage(10))
    keys = [status.key for status in client.list_ledgers(policy="per-thread")]
    assert keys == [f"per-thread{{thread=t{i:03}}}" for i in range(120)]  # > a page of 100
    status = client.get_ledger("per-thread{thread=t000}")
    assert (status.policy, status.labels, status.state) == (
        "per-thread",
        {"thread": "t000"},
        LedgerState.ok,
    )
    assert status.dimensions == (
        DimensionStatus(Dimension.total_tokens, 10, 0, 100_000, 99_990, 0),
    )
    assert (status.totals.requests, status.totals.first_use) == (1, at(served.clock.now))
    assert (status.window_end, status.enforcement) == (None, Enforcement.hard)
    client.consume({"thread": "t007"}, Usage(80_000))
    warned = [s.key for s in client.list_ledgers(min_state=LedgerState.warning)]
    assert warned == ["per-thread{thread=t007}"]
    selected = [s.key for s in client.list_ledgers(selector={"thread": "t001"})]
    assert selected == ["per-thread{thread=t001}"]


# --- errors and retries ----------------------------------------------------------------


def test_errors_are_typed_and_keep_the_servers_message(client: BudgetClient) -> None:
    with pytest.raises(InvalidRequest, match=r"labels\['Bad Key'\]") as raised:
        client.consume({"Bad Key": "x"}, Usage(1))
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(raised.value.__cause__, grpc.RpcError)
    with pytest.raises(NotFound, match="reservation"):
        client.commit("res-unknown", Usage(1))
    with pytest.raises(NotFound):
        client.get_ledger("per-thread{thread=nobody}")
    client.open_run(THREAD, run_id="once")
    with pytest.raises(AlreadyExists, match="once"):
        client.open_run(THREAD, run_id="once")


def test_server_limits_are_server_busy(make_served: Callable[..., Served]) -> None:
    served = make_served(limits=Limits(max_runs=1))
    with BudgetClient(served.target) as client:
        client.open_run(THREAD)
        with pytest.raises(ServerBusy, match="max_runs"):
            client.open_run(THREAD)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_retry_reuses_the_request_id_so_nothing_counts_twice(
    served: Served, code: grpc.StatusCode
) -> None:
    seen = Seen(mode="lose", faults=2, code=code)  # the server handles it, the answer is lost
    with BudgetClient(served.target, backoff=FAST, interceptors=[Flaky(seen)]) as client:
        result = client.consume(THREAD, Usage(100))
    attempts = seen.requests("Consume")
    assert len(attempts) == 3
    assert len({request.request_id for request in attempts}) == 1
    assert result.replayed  # the stored answer of the first attempt
    assert ledger(served).totals.requests == 1


def test_a_lost_reserve_answer_holds_the_estimate_once(served: Served) -> None:
    seen = Seen(mode="lose", faults=1)
    with BudgetClient(served.target, backoff=FAST, interceptors=[Flaky(seen)]) as client:
        held = client.reserve(THREAD, Usage(1000))
        assert held.result.replayed
        status = ledger(served)
        assert (status.dimensions[0].reserved, status.reservations) == (1000, 1)
        held.commit(Usage(900))
    assert ledger(served).totals.total_tokens == 900


def test_retries_are_bounded_and_only_for_retryable_statuses(served: Served) -> None:
    seen = Seen(mode="drop", faults=100)
    with BudgetClient(served.target, retries=2, backoff=FAST, interceptors=[Flaky(seen)]) as c:
        with pytest.raises(BudgetdUnavailable, match="after 3 attempts"):
            c.consume(THREAD, Usage(1))
        assert len(seen.requests("Consume")) == 3
        seen.code = grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InvalidRequest):
            c.check(THREAD, Usage(1))
        assert len(seen.requests("Check")) == 1


def test_the_default_target_comes_from_budgetd_target(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGETD_TARGET", served.target)
    with BudgetClient() as client:
        assert client.target == served.target
        assert client.check(THREAD, Usage(1)).allowed


def test_a_bare_path_as_target_is_a_unix_socket(tmp_path: Path) -> None:
    with BudgetClient(str(tmp_path / "budgetd.sock")) as client:
        assert client.target == f"unix:{tmp_path}/budgetd.sock"
    with BudgetClient("localhost:50051") as client:
        assert client.target == "localhost:50051"


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="on_unavailable"):
        BudgetClient("unix:/nowhere", on_unavailable="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries"):
        BudgetClient("unix:/nowhere", retries=-1)
    with pytest.raises(ValueError, match="resubscribe_attempts"):
        BudgetClient("unix:/nowhere", resubscribe_attempts=-1)
    with pytest.raises(ValueError, match="offline_recheck_s"):
        BudgetClient("unix:/nowhere", offline_recheck_s=-1)


# --- events ----------------------------------------------------------------------------


def test_subscribe_yields_typed_events(served: Served, client: BudgetClient) -> None:
    client.consume(THREAD, Usage(80_000, model="gpt-4o"))
    kinds = [EventKind.usage_recorded, EventKind.threshold_crossed]
    with client.subscribe(selector={"thread": "t1"}, kinds=kinds, after_seq=0) as events:
        got = {event.kind: event for event in (next(events), next(events))}
    usage, crossed = got[EventKind.usage_recorded], got[EventKind.threshold_crossed]
    assert sorted([usage.seq, crossed.seq]) == [1, 2]
    assert usage.at == at(served.clock.now)
    assert usage.labels == {**THREAD, "model": "gpt-4o"}
    assert isinstance(usage.payload, UsageRecorded)
    assert usage.payload.usage == Usage(80_000, model="gpt-4o")
    assert THREAD_KEY in usage.payload.ledger_keys and usage.payload.cost_known
    assert isinstance(crossed.payload, ThresholdCrossed)
    assert crossed.labels == {"thread": "t1"}
    assert (crossed.payload.crossing.percent, crossed.payload.crossing.severity) == (
        75,
        Severity.warning,
    )


def test_subscribe_delivers_live_run_events(served: Served, client: BudgetClient) -> None:
    with client.subscribe(kinds=[EventKind.run_opened, EventKind.run_ended]) as events:
        wait_until(lambda: subscribers(served) == 1, "the subscription to register")
        with client.run(THREAD, run_id="job"):
            served.clock.advance(3)
        opened, ended = next(events), next(events)
    assert (opened.kind, ended.kind) == (EventKind.run_opened, EventKind.run_ended)
    assert isinstance(ended.payload, RunEnded)
    assert (ended.payload.run_id, ended.payload.reason) == ("job", RunEndReason.closed)
    assert ended.payload.duration_s == 3


def test_subscribe_resumes_after_a_slow_subscriber_is_cut_off(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(max_lag=5)
    with BudgetClient(served.target, backoff=FAST) as client, client.subscribe() as events:
        wait_until(lambda: subscribers(served) == 1, "the subscription to register")
        client.consume(THREAD, Usage(1))
        assert next(events).seq == 1
        served.in_loop(lambda: burst(served, 10))  # one loop step: the stream cannot keep up
        assert [next(events).seq for _ in range(10)] == list(range(2, 12))
        assert events.reconnects == 1 and events.last_seq == 11


def test_closing_a_subscription_from_another_thread_ends_the_iteration(
    served: Served, client: BudgetClient
) -> None:
    got: list[list[Event]] = []
    events = client.subscribe()
    reader = threading.Thread(target=lambda: got.append(list(events)))
    reader.start()
    wait_until(lambda: subscribers(served) == 1, "the subscription to register")
    events.close()
    reader.join(timeout=30)
    assert got == [[]] and not reader.is_alive()


def test_subscribe_starts_with_a_gap_when_events_are_no_longer_retained(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(retention=4)
    with BudgetClient(served.target) as client:
        for i in range(10):
            client.consume({"thread": f"t{i}"}, Usage(1))
        with client.subscribe(after_seq=0) as events:
            gap, first = next(events), next(events)
    assert (gap.kind, gap.payload, gap.seq) == (EventKind.gap, Gap(7), 6)
    assert first.seq == 7


def test_subscribe_gives_up_after_bounded_failures(tmp_path: Path) -> None:
    target = f"unix:{tmp_path}/absent.sock"
    client = BudgetClient(target, retries=0, resubscribe_attempts=3, resubscribe_backoff=FAST)
    with client, client.subscribe() as events:
        with pytest.raises(BudgetdUnavailable, match="after 4 attempts"):
            next(events)
        assert events.reconnects == 3  # its own budget: not `retries`
