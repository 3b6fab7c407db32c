"""BudgetService over a real grpc.aio server: translation, status codes, idempotency."""

from __future__ import annotations

import functools
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from budgetd.core import Limits, Policy
from budgetd.v1 import budget_pb2 as pb
from tests.service.support import Served

THREAD = {"agent": "writer", "thread": "t1"}


def usage(input_tokens: int = 100, output_tokens: int = 50, model: str = "gpt-4o") -> pb.Usage:
    return pb.Usage(input_tokens=input_tokens, output_tokens=output_tokens, model=model)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    return error.code(), error.details() or ""


def test_consume_records_in_every_matching_ledger(served: Served) -> None:
    answer = served.budget.Consume(
        pb.ConsumeRequest(request_id="c1", labels=THREAD, usage=usage(1000, 500))
    )
    keys = {brief.key for brief in answer.ledgers}
    assert keys == {
        "per-thread{thread=t1}",
        "daily",
        "runs",
        "per-agent{agent=writer}",
        "agent-usage{agent=writer}",
        "model-usage{model=gpt-4o}",
    }
    assert answer.cost_known and answer.cost_micro_usd > 0
    assert not answer.replayed
    ledger = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert ledger.totals.total_tokens == 1500
    assert ledger.totals.requests == 1
    assert ledger.labels == {"thread": "t1"}
    assert ledger.dimensions[0].dimension == pb.DIMENSION_TOTAL_TOKENS
    assert ledger.dimensions[0].limit == 100_000
    assert ledger.dimensions[0].remaining == 100_000 - 1500


def test_repeated_request_id_returns_the_stored_answer_and_changes_nothing(
    served: Served,
) -> None:
    request = pb.ConsumeRequest(request_id="same", labels=THREAD, usage=usage())
    first = served.budget.Consume(request)
    again = served.budget.Consume(request)
    assert again.replayed and not first.replayed
    assert list(again.ledgers) == list(first.ledgers)
    ledger = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert ledger.totals.requests == 1


def test_reserve_then_commit_replaces_the_hold_and_reports_the_overrun(served: Served) -> None:
    held = served.budget.Reserve(
        pb.ReserveRequest(
            request_id="r1", labels=THREAD, estimate=usage(100, 100), ttl=Duration(seconds=30)
        )
    )
    assert held.decision == pb.DECISION_ALLOW
    assert held.reservation_id
    assert held.expires_at.seconds == int(served.clock.now) + 30
    status = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert status.dimensions[0].reserved == 200

    done = served.budget.Commit(
        pb.CommitRequest(request_id="k1", reservation_id=held.reservation_id, actual=usage(300, 0))
    )
    assert [(o.dimension, o.reserved, o.actual) for o in done.overruns] == [
        (pb.DIMENSION_TOTAL_TOKENS, 200, 300),
        (pb.DIMENSION_INPUT_TOKENS, 100, 300),
    ]
    status = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert status.dimensions[0].reserved == 0
    assert status.totals.total_tokens == 300


def test_check_denies_naming_policy_ledger_dimension_used_and_limit(served: Served) -> None:
    served.budget.Consume(pb.ConsumeRequest(request_id="c", labels=THREAD, usage=usage(90_000, 0)))
    answer = served.budget.Check(pb.CheckRequest(labels=THREAD, estimate=usage(20_000, 0)))
    assert answer.decision == pb.DECISION_DENY
    (blocker,) = answer.blockers
    assert (blocker.policy, blocker.ledger, blocker.dimension) == (
        "per-thread",
        "per-thread{thread=t1}",
        pb.DIMENSION_TOTAL_TOKENS,
    )
    assert (blocker.used, blocker.requested, blocker.limit, blocker.shortfall) == (
        90_000,
        20_000,
        100_000,
        10_000,
    )
    assert blocker.enforcement == pb.ENFORCEMENT_HARD


def test_release_drops_the_hold(served: Served) -> None:
    held = served.budget.Reserve(pb.ReserveRequest(request_id="r", labels=THREAD, estimate=usage()))
    answer = served.budget.Release(
        pb.ReleaseRequest(request_id="x", reservation_id=held.reservation_id)
    )
    assert answer.released
    status = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert status.dimensions[0].reserved == 0
    assert status.totals.requests == 0


def test_an_expired_hold_is_swept_by_the_timer(served: Served) -> None:
    held = served.budget.Reserve(
        pb.ReserveRequest(request_id="r", labels=THREAD, estimate=usage(), ttl=Duration(seconds=5))
    )
    served.clock.advance(6)
    served.expire()
    status = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert status.dimensions[0].reserved == 0
    answer = served.budget.Release(
        pb.ReleaseRequest(request_id="x", reservation_id=held.reservation_id)
    )
    assert not answer.released


def test_runs_open_heartbeat_and_close_with_totals(served: Served) -> None:
    opened = served.budget.OpenRun(
        pb.OpenRunRequest(request_id="o", labels=THREAD, run_id="run-1", ttl=Duration(seconds=60))
    )
    assert opened.decision == pb.DECISION_ALLOW
    assert opened.deadline.seconds == int(served.clock.now) + 120 * 60
    served.budget.Consume(
        pb.ConsumeRequest(request_id="c", labels=THREAD, usage=usage(10, 5), run_id="run-1")
    )
    served.clock.advance(30)
    beat = served.budget.Heartbeat(pb.HeartbeatRequest(run_id="run-1"))
    assert beat.expires_at.seconds == int(served.clock.now) + 60
    served.clock.advance(12)
    closed = served.budget.CloseRun(pb.CloseRunRequest(request_id="cl", run_id="run-1"))
    assert closed.totals.total_tokens == 15
    assert closed.duration.seconds == 42
    assert [s.key for s in closed.closed_ledgers] == ["per-thread{thread=t1}"]


def test_concurrency_cap_denies_the_eleventh_run_and_a_dead_runs_slot_frees(
    served: Served,
) -> None:
    for i in range(10):
        opened = served.budget.OpenRun(
            pb.OpenRunRequest(
                request_id=f"o{i}", labels={"agent": "a"}, run_id=f"r{i}", ttl=Duration(seconds=5)
            )
        )
        assert opened.decision != pb.DECISION_DENY  # 8 of 10 and up: allowed with a warning
    denied = served.budget.OpenRun(
        pb.OpenRunRequest(request_id="o10", labels={"agent": "a"}, run_id="r10")
    )
    assert denied.decision == pb.DECISION_DENY
    assert denied.blockers[0].dimension == pb.DIMENSION_CONCURRENCY
    served.clock.advance(6)  # no heartbeats: every run's ttl passes
    served.expire()
    again = served.budget.OpenRun(
        pb.OpenRunRequest(request_id="o11", labels={"agent": "a"}, run_id="r11")
    )
    assert again.decision == pb.DECISION_ALLOW


def test_list_ledgers_filters_and_pages(served: Served) -> None:
    for i in range(5):
        served.budget.Consume(
            pb.ConsumeRequest(
                request_id=f"c{i}", labels={"agent": "a", "thread": f"t{i}"}, usage=usage()
            )
        )
    first = served.budget.ListLedgers(pb.ListLedgersRequest(policy="per-thread", page_size=3))
    assert len(first.ledgers) == 3 and first.next_page_token
    rest = served.budget.ListLedgers(
        pb.ListLedgersRequest(policy="per-thread", page_size=3, page_token=first.next_page_token)
    )
    keys = [s.key for s in (*first.ledgers, *rest.ledgers)]
    assert sorted(keys) == [f"per-thread{{thread=t{i}}}" for i in range(5)]
    assert not rest.next_page_token
    selected = served.budget.ListLedgers(pb.ListLedgersRequest(selector={"thread": "t3"}))
    assert [s.key for s in selected.ledgers] == ["per-thread{thread=t3}"]


# --- status codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ConsumeRequest(request_id="c", labels={"Bad Key": "x"}), "labels['Bad Key']"),
        (pb.ConsumeRequest(request_id="c", labels={"k": "v" * 257}), "labels.k"),
        (
            pb.ConsumeRequest(request_id="c", labels={f"k{i}": "v" for i in range(17)}),
            "labels",
        ),
        (pb.ConsumeRequest(request_id="", labels=THREAD), "request_id"),
        (pb.ConsumeRequest(request_id="has space", labels=THREAD), "request_id"),
        (pb.ConsumeRequest(request_id="c", labels=THREAD, usage=usage(-1, 0)), "input_tokens"),
        (
            pb.ConsumeRequest(request_id="c", labels=THREAD, usage=usage(10**12 + 1, 0)),
            "input_tokens",
        ),
        (
            pb.ConsumeRequest(
                request_id="c",
                labels=THREAD,
                usage=pb.Usage(input_tokens=1, cached_input_tokens=2),
            ),
            "cached_input_tokens",
        ),
    ],
)
def test_bad_consume_is_invalid_argument_naming_the_field_and_changes_nothing(
    served: Served, request_: pb.ConsumeRequest, field: str
) -> None:
    code, details = code_of(lambda: served.budget.Consume(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details
    assert served.in_loop(lambda: served.runtime.engine.ledger_count) == 0
    assert served.runtime.events.last_seq == 0


def test_bad_ttl_is_invalid_argument(served: Served) -> None:
    for ttl in (Duration(seconds=-1), Duration(seconds=0), Duration(seconds=3601)):
        request = pb.ReserveRequest(request_id="r", labels=THREAD, estimate=usage(), ttl=ttl)
        code, details = code_of(functools.partial(served.budget.Reserve, request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("ttl")


def test_oversize_message_is_resource_exhausted_and_changes_nothing(served: Served) -> None:
    huge = pb.ConsumeRequest(request_id="c", labels={"k": "v" * 70_000}, usage=usage())
    code, _ = code_of(lambda: served.budget.Consume(huge))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.in_loop(lambda: served.runtime.engine.ledger_count) == 0


def test_unknown_reservation_run_and_ledger_are_not_found(served: Served) -> None:
    calls: list[Callable[[], object]] = [
        lambda: served.budget.Commit(
            pb.CommitRequest(request_id="k", reservation_id="res-nope", actual=usage())
        ),
        lambda: served.budget.Heartbeat(pb.HeartbeatRequest(run_id="nope")),
        lambda: served.budget.CloseRun(pb.CloseRunRequest(request_id="c", run_id="nope")),
        lambda: served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=nope}")),
        lambda: served.budget.Check(pb.CheckRequest(labels=THREAD, run_id="nope")),
    ]
    for call in calls:
        assert code_of(call)[0] == grpc.StatusCode.NOT_FOUND


def test_opening_an_open_run_again_is_already_exists(served: Served) -> None:
    served.budget.OpenRun(pb.OpenRunRequest(request_id="o1", labels=THREAD, run_id="r"))
    code, details = code_of(
        lambda: served.budget.OpenRun(pb.OpenRunRequest(request_id="o2", labels=THREAD, run_id="r"))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "run_id" in details


def test_server_limits_are_resource_exhausted(make_served: Callable[..., Served]) -> None:
    served = make_served(
        policies=(Policy.from_mapping({"name": "p", "per": ["thread"]}),),
        limits=Limits(max_reservations=2),
    )
    for i in range(2):
        served.budget.Reserve(pb.ReserveRequest(request_id=f"r{i}", labels=THREAD))
    code, details = code_of(
        lambda: served.budget.Reserve(pb.ReserveRequest(request_id="r2", labels=THREAD))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_reservations" in details


def test_unknown_enum_values_are_invalid_argument(served: Served) -> None:
    code, details = code_of(
        lambda: served.budget.ListLedgers(pb.ListLedgersRequest(min_state=99))  # type: ignore[arg-type]
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "min_state" in details
