"""The coalescer's decisions (`budgetd_client._batching`), without I/O: when a batch
goes, what it holds, and what each caller gets from an answer, a refusal or a break.

Time is a number the test passes in, so the window is tested without waiting.
"""

from __future__ import annotations

import grpc
import pytest

from budgetd_client import Coalescing
from budgetd_client._batching import (
    BUSY_S,
    IN_FLIGHT_BATCHES,
    UNBATCHED,
    Gathering,
    Op,
    Outcome,
    Refused,
)
from budgetd_client.errors import InvalidRequest, NotFound, ServerBusy, from_rpc_error
from budgetd_client.v1 import budget_pb2 as pb

WINDOW_S = 200e-6


def consume(rid: str = "r", model: str = "gpt-4o") -> Op:
    request = pb.ConsumeRequest(
        request_id=rid, labels={"thread": "t1"}, usage=pb.Usage(input_tokens=1, model=model)
    )
    return Op("Consume", request, lambda: None)


def gathering(**settings: int) -> Gathering:
    return Gathering(Coalescing(**settings))


def answer(request: pb.BatchStreamRequest, *results: pb.BatchResult) -> pb.BatchStreamResponse:
    response = pb.BatchStreamResponse(sequence=request.sequence)
    response.response.results.extend(results)
    return response


def consumed() -> pb.BatchResult:
    return pb.BatchResult(consume=pb.ConsumeResponse(cost_known=True))


def failed(code: grpc.StatusCode, message: str) -> pb.BatchResult:
    return pb.BatchResult(error=pb.StreamError(code=code.value[0], message=message))


def typed(outcome: Outcome) -> Exception:
    assert isinstance(outcome, Refused), outcome
    return from_rpc_error(outcome, "unix:/x")


# --- when a batch goes -------------------------------------------------------------------


def test_a_lone_operation_goes_at_once_whatever_the_window() -> None:
    batches = gathering(window_us=1_000_000)
    batches.add(consume(), now=0.0)
    assert batches.due(now=0.0)
    assert batches.wake_at() is None


def test_with_a_batch_in_flight_the_next_waits_for_its_window_from_its_first_operation() -> None:
    batches = gathering(window_us=200)
    batches.add(consume("a"), now=0.0)
    batches.take(now=0.0)
    batches.add(consume("b"), now=1.0)
    batches.add(consume("c"), now=1.0001)
    assert not batches.due(now=1.0001)
    assert batches.wake_at() == pytest.approx(1.0 + WINDOW_S)
    assert batches.due(now=1.0 + WINDOW_S)
    request = batches.take(now=1.0 + WINDOW_S)
    assert [op.consume.request_id for op in request.batch.operations] == ["b", "c"]


def test_a_full_batch_goes_before_its_window_ends() -> None:
    batches = gathering(window_us=1_000_000, max_operations=3)
    batches.add(consume("first"), now=0.0)
    batches.take(now=0.0)
    for i in range(3):
        assert not batches.due(now=0.0)
        batches.add(consume(f"r{i}"), now=0.0)
    assert batches.due(now=0.0)
    assert len(batches.take(now=0.0).batch.operations) == 3


def test_no_more_than_the_in_flight_bound_is_sent_before_an_answer() -> None:
    batches = gathering(window_us=0)
    requests = []
    for i in range(IN_FLIGHT_BATCHES + 1):
        batches.add(consume(f"r{i}"), now=0.0)
        if batches.due(now=0.0):
            requests.append(batches.take(now=0.0))
    assert len(requests) == IN_FLIGHT_BATCHES
    assert not batches.due(now=10.0) and batches.wake_at() is None
    batches.answered(answer(requests[0], consumed()))
    assert batches.due(now=10.0)


def test_a_batch_stays_under_the_message_size_and_an_operation_too_large_is_not_batched() -> None:
    batches = gathering(window_us=0)
    big = consume("big", model="m" * 30_000)
    assert batches.batches(big, now=0.0)
    huge = consume("huge", model="m" * 70_000)
    assert not batches.batches(huge, now=0.0)  # its caller makes the unary call
    for i in range(3):
        batches.add(consume(f"b{i}", model="m" * 30_000), now=0.0)
    first = batches.take(now=0.0)
    assert len(first.batch.operations) == 2
    assert first.ByteSize() <= 64 * 1024


# --- what callers get ---------------------------------------------------------------------


def test_each_result_goes_to_its_own_operation_with_its_place_taken_out() -> None:
    batches = gathering()
    ops = [consume("ok"), consume("bad"), consume("gone")]
    for op in ops:
        batches.add(op, now=0.0)
    request = batches.take(now=0.0)
    settled = batches.answered(
        answer(
            request,
            consumed(),
            failed(grpc.StatusCode.INVALID_ARGUMENT, "operations[1].consume.usage.input_tokens: x"),
            failed(grpc.StatusCode.NOT_FOUND, "operations[2].consume: reservation 'r' not found"),
        )
    )
    assert [op for op, _ in settled] == ops
    assert isinstance(settled[0][1], pb.ConsumeResponse)
    bad, gone = typed(settled[1][1]), typed(settled[2][1])
    assert isinstance(bad, InvalidRequest) and str(bad) == "usage.input_tokens: x"
    assert isinstance(gone, NotFound) and str(gone) == "reservation 'r' not found"
    assert batches.idle


def test_a_result_of_the_wrong_kind_or_count_is_an_error_not_an_answer() -> None:
    batches = gathering()
    batches.add(consume(), now=0.0)
    request = batches.take(now=0.0)
    ((_, outcome),) = batches.answered(answer(request, pb.BatchResult(check=pb.CheckResponse())))
    assert isinstance(outcome, Refused) and outcome.code() is grpc.StatusCode.INTERNAL
    batches.add(consume(), now=0.0)
    request = batches.take(now=0.0)
    ((_, outcome),) = batches.answered(answer(request))
    assert isinstance(outcome, Refused) and "0 results for 1 operations" in outcome.details()


def test_a_batch_refused_as_too_large_is_split_to_the_bound_the_daemon_named() -> None:
    batches = gathering(max_operations=8)
    ops = [consume(f"r{i}") for i in range(8)]
    for op in ops:
        batches.add(op, now=0.0)
    request = batches.take(now=0.0)
    refusal = pb.BatchStreamResponse(sequence=request.sequence)
    refusal.error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    refusal.error.message = (
        "operations: must hold 1..3 operations (server.max_batch_operations); got 8"
    )
    assert batches.answered(refusal) == []  # nobody is answered: they go again
    assert batches.bound == 3 and batches.stats(waiting=0).max_operations == 3
    assert list(batches.pending) == ops  # in their order, ahead of anything newer
    sizes = []
    while batches.pending:
        sizes.append(len(batches.take(now=0.0).batch.operations))
    assert sizes == [3, 3, 2]


def test_a_refusal_without_a_bound_halves_and_a_single_operation_gets_it_as_its_answer() -> None:
    batches = gathering(max_operations=4)
    for i in range(4):
        batches.add(consume(f"r{i}"), now=0.0)

    def refuse(request: pb.BatchStreamRequest) -> pb.BatchStreamResponse:
        refusal = pb.BatchStreamResponse(sequence=request.sequence)
        refusal.error.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        refusal.error.message = "operations: refused"
        return refusal

    batches.answered(refuse(batches.take(now=0.0)))
    assert batches.bound == 2
    batches.answered(refuse(batches.take(now=0.0)))
    assert batches.bound == 1
    settled = batches.answered(refuse(batches.take(now=0.0)))
    assert len(settled) == 1 and isinstance(typed(settled[0][1]), InvalidRequest)


def test_an_operation_withdrawn_before_it_was_sent_never_goes() -> None:
    batches = gathering()
    first, second = consume("a"), consume("b")
    batches.add(first, now=0.0)
    batches.add(second, now=0.0)
    assert batches.withdraw(first)
    assert [op.consume.request_id for op in batches.take(now=0.0).batch.operations] == ["b"]
    assert not batches.withdraw(second)  # already sent: its answer is dropped instead
    assert second.abandoned


def test_a_stalled_stream_is_told_by_the_age_of_its_oldest_batch() -> None:
    batches = gathering()
    batches.add(consume(), now=0.0)
    batches.take(now=0.0)
    assert not batches.stalled(now=4.9, timeout_s=5.0)
    assert batches.stalled(now=5.0, timeout_s=5.0)


# --- a broken stream -------------------------------------------------------------------------


def in_flight_and_queued(batches: Gathering) -> tuple[Op, Op]:
    sent, queued = consume("sent"), consume("queued")
    batches.add(sent, now=0.0)
    batches.take(now=0.0)
    batches.add(queued, now=0.0)
    return sent, queued


def test_a_broken_stream_fails_what_it_carried_as_retryable_and_keeps_the_queue() -> None:
    batches = gathering()
    sent, queued = in_flight_and_queued(batches)
    settled = batches.broke(grpc.StatusCode.CANCELLED, "reset", now=0.0)
    assert [op for op, _ in settled] == [sent]
    outcome = settled[0][1]
    assert isinstance(outcome, Refused) and outcome.code() is grpc.StatusCode.UNAVAILABLE
    assert "CANCELLED: reset" in outcome.details()
    assert list(batches.pending) == [queued] and not batches.in_flight


def test_a_refusal_of_the_caller_is_each_operations_answer() -> None:
    batches = gathering()
    sent, _ = in_flight_and_queued(batches)
    ((op, outcome),) = batches.broke(grpc.StatusCode.PERMISSION_DENIED, "the reader role", 0.0)
    assert op is sent
    assert isinstance(outcome, Refused) and outcome.code() is grpc.StatusCode.PERMISSION_DENIED


def test_a_daemon_refusing_streams_sends_everything_unary_for_a_while() -> None:
    batches = gathering()
    sent, queued = in_flight_and_queued(batches)
    settled = batches.broke(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_streams=4 reached", 10.0)
    assert settled == [(sent, UNBATCHED), (queued, UNBATCHED)]
    assert not batches.batches(consume(), now=10.0 + BUSY_S / 2)
    assert batches.batches(consume(), now=10.0 + BUSY_S)


def test_a_message_too_large_for_the_daemon_lowers_the_batch_size() -> None:
    batches = gathering()
    in_flight_and_queued(batches)
    details = "Received message larger than max (70000 vs. 32768)"
    batches.broke(grpc.StatusCode.RESOURCE_EXHAUSTED, details, 0.0)
    assert batches.byte_budget < 32768


def test_a_daemon_without_batch_stream_turns_coalescing_off() -> None:
    batches = gathering()
    in_flight_and_queued(batches)
    settled = batches.broke(grpc.StatusCode.UNIMPLEMENTED, "Method not found", 0.0)
    assert all(outcome is UNBATCHED for _, outcome in settled)
    assert not batches.batches(consume(), now=1e9)


# --- the setting -------------------------------------------------------------------------------


def test_the_setting_is_checked_and_true_means_the_defaults() -> None:
    assert Coalescing.of(True) == Coalescing(window_us=200, max_operations=256, max_pending=4096)
    assert Coalescing.of(False) is None
    with pytest.raises(ValueError, match="max_operations"):
        Coalescing(max_operations=0)
    with pytest.raises(ValueError, match="max_pending"):
        Coalescing(max_operations=64, max_pending=10)
    with pytest.raises(ValueError, match="window_us"):
        Coalescing(window_us=-1)
    with pytest.raises(TypeError):
        Coalescing.of("yes")  # type: ignore[arg-type]


def test_a_busy_server_error_stays_typed() -> None:
    assert isinstance(typed(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "x")), ServerBusy)
