"""ConsumeStream, Subscribe and BudgetAdminService over a real grpc.aio server."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from budgetd.core import Policy
from budgetd.event_log import EventFilter, SubscriberTooSlow
from budgetd.persistence import snapshot
from budgetd.runtime import Durability
from budgetd.v1 import budget_pb2 as pb
from tests.service.support import Served

THREAD = {"agent": "writer", "thread": "t1"}
TINY = (
    Policy.from_mapping({"name": "per-thread", "per": ["thread"], "caps": {"total_tokens": 1000}}),
)


def consume(i: int, tokens: int = 10, labels: dict[str, str] | None = None) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(
        request_id=f"c{i}",
        labels=labels or THREAD,
        usage=pb.Usage(input_tokens=tokens, model="gpt-4o"),
    )


# --- ConsumeStream -------------------------------------------------------------------


# With a journal, answers wait in a window for their fsync; without one, each message is
# answered as it is applied. Both answer the same.
MODES = [Durability.JOURNAL, Durability.SNAPSHOT, Durability.MEMORY]


@pytest.mark.parametrize("durability", MODES)
def test_stream_answers_in_order_exactly_as_consume_would(
    durability: Durability, make_served: Callable[..., Served]
) -> None:
    streamed, unary = make_served(durability=durability), make_served(durability=durability)
    requests = [consume(i, tokens=100 * (i + 1)) for i in range(5)]
    answers = list(
        streamed.budget.ConsumeStream(
            iter(
                [pb.ConsumeStreamRequest(sequence=i + 1, request=r) for i, r in enumerate(requests)]
            )
        )
    )
    assert [a.sequence for a in answers] == [1, 2, 3, 4, 5]
    expected = [unary.budget.Consume(r) for r in requests]
    assert [a.response for a in answers] == expected


@pytest.mark.parametrize("durability", MODES)
def test_a_bad_message_gets_an_error_entry_and_the_stream_goes_on(
    durability: Durability, make_served: Callable[..., Served]
) -> None:
    served = make_served(durability=durability)
    bad = pb.ConsumeRequest(request_id="bad", labels={"Bad": "x"})
    items = [
        pb.ConsumeStreamRequest(sequence=1, request=consume(1)),
        pb.ConsumeStreamRequest(sequence=2, request=bad),
        pb.ConsumeStreamRequest(sequence=3),  # no request at all
        pb.ConsumeStreamRequest(sequence=4, request=consume(4)),
    ]
    answers = list(served.budget.ConsumeStream(iter(items)))
    kinds = [a.WhichOneof("result") for a in answers]
    assert kinds == ["response", "error", "error", "response"]
    assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "labels['Bad']" in answers[1].error.message
    assert answers[2].error.message.startswith("request")
    ledger = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert ledger.totals.requests == 2


def test_streams_beyond_the_bound_are_resource_exhausted(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(max_streams=1)
    gate: queue.Queue[pb.ConsumeStreamRequest | None] = queue.Queue()

    def held_open() -> Iterator[pb.ConsumeStreamRequest]:
        while (item := gate.get()) is not None:
            yield item

    first = served.budget.ConsumeStream(held_open())
    gate.put(pb.ConsumeStreamRequest(sequence=1, request=consume(1)))
    assert next(first).sequence == 1  # the first stream is open and counted
    with pytest.raises(grpc.RpcError) as raised:
        list(served.budget.ConsumeStream(iter([pb.ConsumeStreamRequest(sequence=1)])))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.put(None)
    assert list(first) == []


# --- Subscribe -----------------------------------------------------------------------


class Collector:
    """Reads a Subscribe stream on a thread; `take(n)` waits for n events."""

    def __init__(self, served: Served, request: pb.SubscribeRequest) -> None:
        self.call = served.budget.Subscribe(request)
        self.items: queue.Queue[pb.Event | grpc.RpcError | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.items.put(response.event)
            self.items.put(None)
        except grpc.RpcError as error:
            self.items.put(error)

    def take(self, count: int) -> list[pb.Event]:
        events = []
        for _ in range(count):
            item = self.items.get(timeout=30)
            assert isinstance(item, pb.Event), item
            events.append(item)
        return events

    def end(self) -> pb.Event | grpc.RpcError | None:
        return self.items.get(timeout=30)

    def cancel(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=30)


def wait_subscribed(served: Served, count: int = 1) -> None:
    """Subscribe registers on the server's loop; wait for it before publishing."""
    for _ in range(1000):
        if served.in_loop(lambda: served.runtime.events.subscriber_count) >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError("subscriber never registered")


def test_subscribers_get_usage_and_threshold_events_with_increasing_seq(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=TINY)
    watcher = Collector(served, pb.SubscribeRequest())
    wait_subscribed(served)
    served.budget.Consume(consume(1, tokens=800))
    events = {e.WhichOneof("payload"): e for e in watcher.take(2)}
    usage_event, crossed_75 = events["usage_recorded"], events["threshold_crossed"]
    assert usage_event.WhichOneof("payload") == "usage_recorded"
    assert usage_event.usage_recorded.request_id == "c1"
    assert usage_event.labels == {**THREAD, "model": "gpt-4o"}
    assert crossed_75.threshold_crossed.crossing.percent == 75
    assert crossed_75.labels == {"thread": "t1"}  # the ledger's labels
    assert {usage_event.seq, crossed_75.seq} == {1, 2}
    watcher.cancel()


def test_selector_kinds_and_severity_filter_events(make_served: Callable[..., Served]) -> None:
    served = make_served(policies=TINY)
    only_t2_critical = Collector(
        served,
        pb.SubscribeRequest(
            selector={"thread": "t2"},
            kinds=[pb.EVENT_KIND_THRESHOLD_CROSSED],
            min_severity=pb.SEVERITY_CRITICAL,
        ),
    )
    wait_subscribed(served)
    served.budget.Consume(consume(1, tokens=990))  # t1: 75, 90, 95 — not for this subscriber
    served.budget.Consume(consume(2, tokens=990, labels={"thread": "t2"}))
    events = only_t2_critical.take(2)
    assert [e.threshold_crossed.crossing.percent for e in events] == [90, 95]
    assert all(e.labels == {"thread": "t2"} for e in events)
    only_t2_critical.cancel()


def test_resume_after_seq_replays_retained_events_then_live_ones(served: Served) -> None:
    for i in range(3):
        served.budget.Consume(consume(i))
    resumed = Collector(served, pb.SubscribeRequest(after_seq=1))
    replayed = resumed.take(2)
    assert [e.seq for e in replayed] == [2, 3]
    served.budget.Consume(consume(9))
    (live,) = resumed.take(1)
    assert live.seq == 4
    resumed.cancel()


def test_resuming_from_a_seq_no_longer_retained_starts_with_a_gap(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(retention=4)
    for i in range(10):
        served.budget.Consume(consume(i))
    resumed = Collector(served, pb.SubscribeRequest(after_seq=0))
    gap, *events = resumed.take(5)
    assert gap.WhichOneof("payload") == "gap"
    assert gap.gap.oldest_available_seq == 7
    assert [e.seq for e in events] == [7, 8, 9, 10]
    resumed.cancel()


def test_a_subscriber_too_far_behind_is_cut_off_and_told_where_to_resume(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(max_lag=5)
    # A subscription registered without a reader: publish more than it may lag by.
    subscription = served.in_loop(lambda: served.runtime.events.subscribe(EventFilter(), None))
    for i in range(6):
        served.budget.Consume(consume(i))
    with pytest.raises(SubscriberTooSlow, match="resume with after_seq=0"):
        served.in_loop(lambda: served.runtime.events.read(subscription, 100))


def test_subscribers_beyond_the_bound_are_resource_exhausted(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(max_subscribers=1)
    first = Collector(served, pb.SubscribeRequest())
    wait_subscribed(served)
    second = Collector(served, pb.SubscribeRequest())
    error = second.end()
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.cancel()


# --- BudgetAdminService --------------------------------------------------------------


def test_put_list_and_delete_policies(served: Served) -> None:
    policy = pb.Policy(
        name="per-user",
        per=["user"],
        caps=[pb.Cap(dimension=pb.DIMENSION_COST_MICRO_USD, limit=5_000_000)],
    )
    policy.window.calendar.unit = pb.CALENDAR_UNIT_DAY
    policy.window.calendar.time_zone = "Europe/Paris"
    put = served.admin.PutPolicy(pb.PutPolicyRequest(policy=policy))
    assert put.created
    assert put.policy.enforcement == pb.ENFORCEMENT_HARD  # default filled in
    assert [t.percent for t in put.policy.thresholds] == [75, 90, 95]
    names = [p.name for p in served.admin.ListPolicies(pb.ListPoliciesRequest()).policies]
    assert names == sorted(names) and "per-user" in names
    served.budget.Consume(consume(1, labels={"user": "ann"}))
    deleted = served.admin.DeletePolicy(pb.DeletePolicyRequest(name="per-user"))
    assert deleted.closed_ledgers == 1
    with pytest.raises(grpc.RpcError) as raised:
        served.admin.DeletePolicy(pb.DeletePolicyRequest(name="per-user"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_bad_policy_is_invalid_argument_naming_the_field(served: Served) -> None:
    cases = [
        (pb.Policy(name="Bad Name"), "policy.name"),
        (
            pb.Policy(name="p", caps=[pb.Cap(dimension=42, limit=1)]),  # type: ignore[arg-type]
            "policy.caps[0].dimension",
        ),
        (pb.Policy(name="p", per=["Bad"]), "policy.per"),
    ]
    for policy, field in cases:
        with pytest.raises(grpc.RpcError) as raised:
            served.admin.PutPolicy(pb.PutPolicyRequest(policy=policy))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (raised.value.details() or "")
    names = [p.name for p in served.admin.ListPolicies(pb.ListPoliciesRequest()).policies]
    assert "p" not in names


def test_reset_returns_final_totals_and_zeroes_the_ledger(served: Served) -> None:
    served.budget.Consume(consume(1, tokens=700))
    reset = served.admin.ResetLedger(
        pb.ResetLedgerRequest(request_id="x", key="per-thread{thread=t1}")
    )
    assert reset.final.totals.total_tokens == 700
    after = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert after.totals.total_tokens == 0


def test_set_ledger_limits_overrides_one_ledger(served: Served) -> None:
    served.budget.Consume(consume(1))
    changed = served.admin.SetLedgerLimits(
        pb.SetLedgerLimitsRequest(
            key="per-thread{thread=t1}",
            caps=[pb.Cap(dimension=pb.DIMENSION_TOTAL_TOKENS, limit=50)],
        )
    )
    assert changed.ledger.dimensions[0].limit == 50
    denied = served.budget.Check(pb.CheckRequest(labels=THREAD, estimate=pb.Usage(input_tokens=41)))
    assert denied.decision == pb.DECISION_DENY


def test_snapshot_writes_the_state_to_a_file(served: Served) -> None:
    served.budget.Consume(consume(1))
    answer = served.admin.Snapshot(pb.SnapshotRequest())
    path = Path(answer.path)
    assert path.is_file()
    assert path.stat().st_size == answer.size_bytes
    loaded = snapshot.load(path)  # verifies both frames' checksums
    assert loaded.seq == answer.sequence == served.runtime.events.last_seq
    assert loaded.lsn == served.runtime.lsn
    assert any(item["ident"] == ["per-thread", "t1"] for item in loaded.state["ledgers"])
    assert not list(path.parent.glob("*.tmp"))


def test_snapshot_in_memory_mode_is_a_failed_precondition(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(durability=Durability.MEMORY)
    with pytest.raises(grpc.RpcError) as caught:
        served.admin.Snapshot(pb.SnapshotRequest())
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "memory" in (caught.value.details() or "")


def test_a_denied_reserve_is_an_event_naming_the_request(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=TINY)
    watcher = Collector(served, pb.SubscribeRequest(kinds=[pb.EVENT_KIND_DENIED]))
    wait_subscribed(served)
    answer = served.budget.Reserve(
        pb.ReserveRequest(request_id="too-big", labels=THREAD, estimate=pb.Usage(input_tokens=5000))
    )
    assert answer.decision == pb.DECISION_DENY
    (denied,) = watcher.take(1)
    assert denied.denied.request_id == "too-big"
    assert denied.denied.blocker.ledger == "per-thread{thread=t1}"
    assert denied.denied.blocker.requested == 5000
    watcher.cancel()


def test_list_runs_pages_open_runs_with_their_usage(served: Served) -> None:
    for run_id in ("b", "a", "c"):
        served.budget.OpenRun(
            pb.OpenRunRequest(request_id=f"o-{run_id}", run_id=run_id, labels={"agent": "w"})
        )
    served.budget.Consume(
        pb.ConsumeRequest(
            request_id="c1", labels={"agent": "w"}, run_id="a", usage=pb.Usage(input_tokens=9)
        )
    )
    first = served.budget.ListRuns(pb.ListRunsRequest(page_size=2))
    assert [run.run_id for run in first.runs] == ["a", "b"] and first.next_page_token
    assert first.runs[0].totals.input_tokens == 9
    assert first.runs[0].labels == {"agent": "w"}
    assert first.runs[0].expires_at.seconds > first.runs[0].opened_at.seconds
    assert first.runs[0].HasField("deadline")  # the embedded runs policy caps run_duration
    rest = served.budget.ListRuns(pb.ListRunsRequest(page_token=first.next_page_token))
    assert [run.run_id for run in rest.runs] == ["c"] and not rest.next_page_token
    with pytest.raises(grpc.RpcError) as bad:
        served.budget.ListRuns(pb.ListRunsRequest(page_size=-1))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_server_info_describes_the_daemon_and_counts_what_it_holds(served: Served) -> None:
    served.budget.Consume(consume(1))
    info = served.admin.GetServerInfo(pb.GetServerInfoRequest())
    assert info.version and info.durability == "journal" and info.state_dir
    assert info.ledgers == served.runtime.engine.ledger_count > 0
    assert info.policies == len(served.runtime.engine.policies)
    assert (info.reservations, info.runs, info.subscribers) == (0, 0, 0)
    assert info.journal_lsn == served.runtime.lsn >= 1
    assert info.last_event_seq == served.runtime.events.last_seq
    assert info.pid > 0


def test_validate_only_put_answers_what_a_put_would_do_and_changes_nothing(
    served: Served,
) -> None:
    before = served.admin.ListPolicies(pb.ListPoliciesRequest())
    assert set(before.config_file_policies) == {p.name for p in before.policies}
    last_seq = served.runtime.events.last_seq
    lsn = served.runtime.lsn
    new = pb.Policy(
        name="fresh", per=["user"], caps=[pb.Cap(dimension=pb.DIMENSION_REQUESTS, limit=5)]
    )
    dry = served.admin.PutPolicy(pb.PutPolicyRequest(policy=new, validate_only=True))
    assert (dry.created, dry.changed) == (True, True)
    assert len(dry.policy.thresholds) == 3  # defaults filled in, as a put would store them
    existing = next(p for p in before.policies if p.name == "per-thread")
    same = served.admin.PutPolicy(pb.PutPolicyRequest(policy=existing, validate_only=True))
    assert (same.created, same.changed) == (False, False)
    with pytest.raises(grpc.RpcError) as bad:
        served.admin.PutPolicy(
            pb.PutPolicyRequest(policy=pb.Policy(name="Bad Name"), validate_only=True)
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (served.runtime.events.last_seq, served.runtime.lsn) == (last_seq, lsn)
    assert "fresh" not in {
        p.name for p in served.admin.ListPolicies(pb.ListPoliciesRequest()).policies
    }
    put = served.admin.PutPolicy(pb.PutPolicyRequest(policy=new))
    assert (put.created, put.changed) == (True, True)
    after = served.admin.ListPolicies(pb.ListPoliciesRequest())
    assert "fresh" not in after.config_file_policies  # put over the API
