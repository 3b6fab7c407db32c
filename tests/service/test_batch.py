"""Batch and BatchStream through the real in-process server (journal mode).

Goal: a batch answers each operation exactly as its own RPC would, in order, each on its
own (one bad operation fails alone, nothing of it applied), refuses a batch with no or
too many operations as a whole, and writes the records of a batch with one fsync.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from budgetd.v1 import budget_pb2 as pb
from tests.service.support import Served

USAGE = pb.Usage(input_tokens=100, output_tokens=20, model="gpt-4o")
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


def _labels(thread: str = "t1") -> dict[str, str]:
    return {"agent": "a1", "thread": thread}


def _consume(rid: str, thread: str = "t1", usage: pb.Usage = USAGE) -> pb.BatchOperation:
    return pb.BatchOperation(
        consume=pb.ConsumeRequest(request_id=rid, labels=_labels(thread), usage=usage)
    )


def _check(thread: str = "t1") -> pb.BatchOperation:
    return pb.BatchOperation(check=pb.CheckRequest(labels=_labels(thread), estimate=USAGE))


def _batch(served: Served, *operations: pb.BatchOperation) -> list[pb.BatchResult]:
    answer = served.budget.Batch(pb.BatchRequest(operations=operations), timeout=30)
    return list(answer.results)


def _thread_used(served: Served, thread: str = "t1") -> int:
    status = served.budget.GetLedger(
        pb.GetLedgerRequest(key=f"per-thread{{thread={thread}}}"), timeout=30
    ).ledger
    return int(status.totals.input_tokens)


def _fsyncs(served: Served) -> tuple[int, int]:
    def stats() -> tuple[int, int]:
        store = served.runtime.store
        assert store is not None and store.journal is not None
        return store.journal.stats.fsyncs, store.journal.stats.records

    return served.in_loop(stats)


def test_operations_are_answered_in_order_each_as_its_own_rpc(served: Served) -> None:
    results = _batch(served, _check(), _consume("b-1"), _check(), _consume("b-2"))
    assert [r.WhichOneof("result") for r in results] == ["check", "consume", "check", "consume"]
    # The second check sees the consume before it; the first does not.
    before, after = (_thread_ledger(r.check) for r in (results[0], results[2]))
    assert before.totals.input_tokens == 0
    assert after.totals.input_tokens == 100
    assert results[1].consume.cost_known and not results[1].consume.replayed
    assert _thread_used(served) == 200

    single = served.budget.Consume(
        pb.ConsumeRequest(request_id="single", labels=_labels(), usage=USAGE), timeout=30
    )
    assert single.cost_micro_usd == results[1].consume.cost_micro_usd


def _thread_ledger(check: pb.CheckResponse) -> pb.LedgerStatus:
    (ledger,) = [s for s in check.ledgers if s.key.startswith("per-thread")]
    return ledger


def test_reserve_commit_and_release_in_batches(served: Served) -> None:
    reserve = pb.ReserveRequest(request_id="r-1", labels=_labels(), estimate=USAGE)
    held = pb.ReserveRequest(request_id="r-2", labels=_labels(), estimate=USAGE)
    granted = _batch(served, pb.BatchOperation(reserve=reserve), pb.BatchOperation(reserve=held))
    first, second = (r.reserve for r in granted)
    assert first.decision == pb.DECISION_ALLOW and first.reservation_id
    commit = pb.CommitRequest(request_id="c-1", reservation_id=first.reservation_id, actual=USAGE)
    release = pb.ReleaseRequest(request_id="rel-1", reservation_id=second.reservation_id)
    done = _batch(served, pb.BatchOperation(commit=commit), pb.BatchOperation(release=release))
    assert done[0].WhichOneof("result") == "commit"
    assert done[1].release.released
    assert _thread_used(served) == 100  # the committed one only


def test_a_bad_operation_fails_alone_and_names_its_place(served: Served) -> None:
    bad = pb.Usage(input_tokens=-1, model="gpt-4o")
    missing = pb.CommitRequest(request_id="c-x", reservation_id="no-such", actual=USAGE)
    results = _batch(
        served,
        _consume("ok-1"),
        _consume("bad-1", usage=bad),
        pb.BatchOperation(),
        pb.BatchOperation(commit=missing),
        _consume("ok-2"),
    )
    kinds = [r.WhichOneof("result") for r in results]
    assert kinds == ["consume", "error", "error", "error", "consume"]
    assert results[1].error.code == INVALID
    assert results[1].error.message.startswith("operations[1].consume.usage.input_tokens: ")
    assert results[2].error.code == INVALID
    assert results[2].error.message.startswith("operations[2].operation: one of check")
    assert results[3].error.code == NOT_FOUND
    assert results[3].error.message.startswith("operations[3].commit: reservation 'no-such'")
    assert _thread_used(served) == 200  # the two good ones; nothing of the bad one


@pytest.mark.parametrize("count", [0, 257])
def test_a_batch_with_no_or_too_many_operations_is_refused_whole(
    served: Served, count: int
) -> None:
    operations = [_consume(f"many-{i}") for i in range(count)]
    with pytest.raises(grpc.RpcError) as raised:
        served.budget.Batch(pb.BatchRequest(operations=operations), timeout=30)
    failed: Any = raised.value
    assert failed.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "operations: must hold 1..256 operations (server.max_batch_operations)" in (
        failed.details()
    )
    assert served.in_loop(lambda: served.runtime.engine.ledger_count) == 0


def test_the_bound_is_the_servers_and_is_reported(served: Served) -> None:
    info = served.admin.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
    assert info.max_batch_operations == 256

    def lower() -> None:
        served.runtime.max_batch_operations = 2

    served.in_loop(lower)
    with pytest.raises(grpc.RpcError):
        _batch(served, _check(), _check(), _check())
    assert len(_batch(served, _check(), _check())) == 2


def test_the_records_of_a_batch_share_one_fsync(served: Served) -> None:
    _batch(served, _consume("warm"))  # the ledgers exist; the journal has written once
    fsyncs, records = _fsyncs(served)
    operations = [_consume(f"g-{i}", thread=f"t{i % 16}") for i in range(256)]
    results = _batch(served, *operations)
    assert all(r.WhichOneof("result") == "consume" for r in results)
    after_fsyncs, after_records = _fsyncs(served)
    assert after_records - records == 256
    assert after_fsyncs - fsyncs == 1


def test_a_retried_batch_is_replayed_and_counted_once(served: Served) -> None:
    operations = [_consume("same-1"), _consume("same-2")]
    first = _batch(served, *operations)
    again = _batch(served, *operations)
    assert [r.consume.replayed for r in first] == [False, False]
    assert [r.consume.replayed for r in again] == [True, True]
    assert _thread_used(served) == 200


def test_batch_stream_answers_each_batch_in_order_and_goes_on_after_a_refused_one(
    served: Served,
) -> None:
    def requests() -> Iterator[pb.BatchStreamRequest]:
        for seq in range(1, 6):
            if seq == 3:  # too many operations: refused whole, the stream goes on
                ops = [_consume(f"s-{seq}-{i}") for i in range(257)]
            else:
                ops = [_consume(f"s-{seq}-{i}") for i in range(10)]
            yield pb.BatchStreamRequest(sequence=seq, batch=pb.BatchRequest(operations=ops))

    answers = list(served.budget.BatchStream(requests(), timeout=30))
    assert [a.sequence for a in answers] == [1, 2, 3, 4, 5]
    assert [a.WhichOneof("result") for a in answers] == [
        "response",
        "response",
        "error",
        "response",
        "response",
    ]
    assert answers[2].error.code == INVALID
    assert all(len(a.response.results) == 10 for a in answers if a.HasField("response"))
    assert _thread_used(served) == 4 * 10 * 100


def test_batch_stream_counts_against_the_stream_bound(served: Served) -> None:
    def fill() -> None:
        served.runtime.streams = served.runtime.max_streams

    served.in_loop(fill)
    request = pb.BatchStreamRequest(sequence=1, batch=pb.BatchRequest(operations=[_check()]))
    with pytest.raises(grpc.RpcError) as raised:
        list(served.budget.BatchStream(iter([request]), timeout=30))
    failed: Any = raised.value
    assert failed.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams" in failed.details()
