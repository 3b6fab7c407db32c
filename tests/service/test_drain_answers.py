"""At the end of a drain's grace period, a call still waiting for its record to be
durable answers UNAVAILABLE ("retry with the same request_id"), not CANCELLED; before
that, a slow disk only makes calls wait. The disk is made slow for real: the journal's
one writer thread is kept busy until the test lets it go."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from budgetd.v1 import budget_pb2 as pb
from tests.service.client_support import wait_until
from tests.service.support import Served

WAIT_S = 30.0


@pytest.fixture
def stalled(served: Served) -> Iterator[threading.Event]:
    """The journal's writer thread busy until the event is set (at the latest at the end)."""
    release = threading.Event()

    def stall() -> None:
        store = served.runtime.store
        assert store is not None and store.journal is not None
        store.journal._executor.submit(release.wait, WAIT_S)

    served.in_loop(stall)
    yield release
    release.set()


def _waiting(served: Served) -> int:
    return served.in_loop(lambda: len(served.runtime._waiting))


def _consume(i: int) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(
        request_id=f"drain-{i}",
        labels={"agent": "a", "thread": "t"},
        usage=pb.Usage(input_tokens=10, model="gpt-4o"),
    )


def test_a_call_waiting_for_durability_at_the_end_of_grace_is_unavailable(
    served: Served, stalled: threading.Event
) -> None:
    consume = served.budget.Consume.future(_consume(1), timeout=WAIT_S)
    commit_waits = served.budget.Reserve.future(
        pb.ReserveRequest(
            request_id="drain-r",
            labels={"agent": "a", "thread": "t"},
            estimate=pb.Usage(input_tokens=10, model="gpt-4o"),
        ),
        timeout=WAIT_S,
    )
    wait_until(lambda: _waiting(served) == 2, "two calls waiting for durability")
    assert served.in_loop(served.runtime.cut_waiting) == 2
    for call in (consume, commit_waits):
        error: Any = call.exception(timeout=WAIT_S)
        assert error is not None
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "retry with the same request_id" in error.details()
    assert _waiting(served) == 0


def test_a_slow_disk_alone_only_makes_calls_wait(served: Served, stalled: threading.Event) -> None:
    consume = served.budget.Consume.future(_consume(2), timeout=WAIT_S)
    wait_until(lambda: _waiting(served) == 1, "a call waiting for durability")
    assert not consume.done()
    stalled.set()
    assert consume.result(timeout=WAIT_S).ledgers
    assert _waiting(served) == 0


def test_a_stream_message_waiting_for_durability_at_the_end_of_grace_is_unavailable(
    served: Served, stalled: threading.Event
) -> None:
    requests: queue.Queue[pb.ConsumeStreamRequest | None] = queue.Queue()
    stream: Any = served.budget.ConsumeStream(iter(requests.get, None), timeout=WAIT_S)
    requests.put(pb.ConsumeStreamRequest(sequence=7, request=_consume(3)))
    wait_until(lambda: _waiting(served) == 1, "the stream's message waiting for durability")
    assert served.in_loop(served.runtime.cut_waiting) == 1
    answer = next(stream)
    requests.put(None)
    assert answer.sequence == 7
    assert answer.WhichOneof("result") == "error", answer
    assert answer.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "retry with the same request_id" in answer.error.message
    assert _waiting(served) == 0
