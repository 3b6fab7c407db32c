"""Safe retries by the caller (`request_id=`), and misuse mapped to typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from budgetd.v1 import budget_pb2 as pb
from budgetd_client import (
    AsyncBudgetClient,
    BudgetClient,
    BudgetdError,
    BudgetdUnavailable,
    ClientClosed,
    EventKind,
    InvalidRequest,
    NotFound,
    Usage,
    WrongEventLoop,
)
from budgetd_client import _event_wire as event_wire
from budgetd_client.events import Unknown, UsageRecorded
from budgetd_client.v1 import budget_pb2 as client_pb  # the SDK's own stubs
from tests.service.client_support import (
    FAST,
    THREAD,
    Flaky,
    Rewrite,
    Seen,
    ledger,
    subscribers,
    wait_until,
)
from tests.service.support import Served


@pytest.fixture
def client(served: Served) -> Iterator[BudgetClient]:
    with BudgetClient(served.target, backoff=FAST) as client:
        yield client


# --- request ids -----------------------------------------------------------------------


def test_every_mutating_call_takes_a_request_id(served: Served, client: BudgetClient) -> None:
    assert not client.consume(THREAD, Usage(5), request_id="consume-1").replayed
    assert client.consume(THREAD, Usage(5), request_id="consume-1").replayed
    held = client.reserve(THREAD, Usage(10), request_id="reserve-1")
    again = client.reserve(THREAD, Usage(10), request_id="reserve-1")
    assert again.result.replayed and again.id == held.id
    assert not client.commit(held.id, Usage(7), request_id="commit-1").replayed
    assert client.commit(held.id, Usage(7), request_id="commit-1").replayed
    other = client.reserve(THREAD, Usage(10))
    assert client.release(other.id, request_id="release-1") is True
    assert client.release(other.id, request_id="release-1") is True  # the stored answer
    run = client.open_run({"agent": "a"}, request_id="open-1")
    assert client.open_run({"agent": "a"}, run_id=run.run_id, request_id="open-1").replayed
    assert not client.close_run(run.run_id, request_id="close-1").replayed
    assert client.close_run(run.run_id, request_id="close-1").replayed
    totals = ledger(served).totals
    assert (totals.total_tokens, totals.requests) == (12, 2)


def test_errors_of_mutating_calls_carry_their_request_id(
    client: BudgetClient, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        client.consume({"Bad Key": "x"}, Usage(1), request_id="mine")
    assert raised.value.request_id == "mine"
    with pytest.raises(NotFound) as not_found:
        client.commit("res-unknown", Usage(1))
    assert not_found.value.request_id is not None and len(not_found.value.request_id) == 32
    with pytest.raises(NotFound) as read:
        client.get_ledger("per-thread{thread=nobody}")
    assert read.value.request_id is None  # a read has none
    with BudgetClient(f"unix:{tmp_path}/absent.sock", retries=0) as offline:
        with pytest.raises(BudgetdUnavailable) as unavailable:
            offline.consume(THREAD, Usage(1))
        assert unavailable.value.request_id is not None
        with pytest.raises(BudgetdUnavailable) as unavailable:
            offline.open_run(THREAD, request_id="open-7")
        assert unavailable.value.request_id == "open-7"


def test_a_commit_retried_after_a_failure_reuses_its_request_id(served: Served) -> None:
    seen = Seen()
    with BudgetClient(served.target, retries=1, backoff=FAST, interceptors=[Flaky(seen)]) as c:
        held = c.reserve(THREAD, Usage(1000))
        seen.mode, seen.faults = "lose", 2  # the commit gets through, both answers are lost
        with pytest.raises(BudgetdUnavailable) as raised:
            held.commit(Usage(700))
        assert raised.value.request_id == held.commit_request_id
        done = held.commit(Usage(700))  # the caller simply tries again
    assert done.replayed  # the first attempt's stored answer
    assert {r.request_id for r in seen.requests("Commit")} == {held.commit_request_id}
    assert len(seen.requests("Commit")) == 3
    totals = ledger(served).totals
    assert (totals.total_tokens, totals.requests) == (700, 1)


# --- misuse ----------------------------------------------------------------------------


def test_calls_on_a_closed_client_raise_client_closed(served: Served) -> None:
    client = BudgetClient(served.target)
    held = client.reserve(THREAD, Usage(10))
    client.close()
    client.close()  # idempotent
    calls: list[Any] = [
        lambda: client.check(THREAD, Usage(1)),
        lambda: client.consume(THREAD, Usage(1)),
        lambda: client.get_ledger("daily"),
        lambda: list(client.list_ledgers()),
        client.subscribe,
        client.flush,
        lambda: held.commit(Usage(1)),
        lambda: client.run(THREAD).__enter__(),
    ]
    for call in calls:
        with pytest.raises(ClientClosed):
            call()
    assert issubclass(ClientClosed, BudgetdError) and client.closed


def test_a_closed_async_client_is_never_reopened(served: Served) -> None:
    async def scenario() -> None:
        client = AsyncBudgetClient(served.target)
        await client.consume(THREAD, Usage(1))
        await client.close()
        with pytest.raises(ClientClosed):
            await client.consume(THREAD, Usage(1))
        with pytest.raises(ClientClosed):
            client.subscribe()
        with pytest.raises(ClientClosed):
            await client.flush()

    asyncio.run(scenario())
    assert ledger(served).totals.requests == 1


def test_an_async_client_serves_one_event_loop(served: Served) -> None:
    client = AsyncBudgetClient(served.target)
    assert asyncio.run(client.check(THREAD, Usage(1))).allowed
    with pytest.raises(WrongEventLoop, match="one client per event loop"):
        asyncio.run(client.check(THREAD, Usage(1)))
    assert issubclass(WrongEventLoop, BudgetdError)
    asyncio.run(client.close())  # from another loop: the channel is only dropped
    assert client.closed


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        ({1: "x"}, r"labels\[1\]: label keys must be str"),
        ({"thread": 7}, r"labels\['thread'\]: label values must be str, not int"),
        ({"thread": None}, r"labels\['thread'\]"),
        (["thread"], r"labels: must be a mapping"),
    ],
)
def test_labels_that_are_not_str_raise_invalid_request_naming_them(
    client: BudgetClient, labels: Any, named: str
) -> None:
    for call in (
        lambda: client.consume(labels, Usage(1)),
        lambda: client.check(labels, Usage(1)),
        lambda: client.reserve(labels, Usage(1)),
    ):
        with pytest.raises(InvalidRequest, match=named):
            call()


@pytest.mark.parametrize(
    ("usage", "named"),
    [
        (Usage(2**63), r"\.input_tokens: must be in 0\.\.2\*\*63-1, got 9223372036854775808"),
        (Usage(1, -1), r"\.output_tokens: must be in"),
        (Usage(1, cost_micro_usd=2**64), r"\.cost_micro_usd: must be in"),
        (Usage(1.5), r"\.input_tokens: must be an int, not float"),  # type: ignore[arg-type]
        (Usage(1, latency_ms=True), r"\.latency_ms: must be an int, not bool"),
        (Usage(1, model=4), r"\.model: must be str"),  # type: ignore[arg-type]
    ],
)
def test_usage_that_cannot_be_sent_raises_invalid_request_naming_the_field(
    served: Served, client: BudgetClient, usage: Usage, named: str
) -> None:
    with pytest.raises(InvalidRequest, match="usage" + named):
        client.consume(THREAD, usage)
    with pytest.raises(InvalidRequest, match="estimate" + named):
        client.reserve(THREAD, usage)
    held = client.reserve(THREAD, Usage(1))
    with pytest.raises(InvalidRequest, match="actual" + named) as raised:
        held.commit(usage)
    assert raised.value.request_id == held.commit_request_id
    held.release()
    assert ledger(served, "daily").totals.requests == 0


def test_an_event_kind_unknown_cannot_be_subscribed_to(client: BudgetClient) -> None:
    with pytest.raises(InvalidRequest, match=r"kinds\[1\]"):
        client.subscribe(kinds=[EventKind.gap, EventKind.unknown])


# --- events a newer daemon may send ------------------------------------------------------


def newer_payload(message: pb.SubscribeResponse) -> pb.SubscribeResponse:
    """Seq 1 as a newer daemon could send it: a payload field this client's proto lacks."""
    if message.event.seq != 1:
        return message
    wire = pb.Event(seq=1, labels={"thread": "t1"}).SerializeToString() + b"\xaa\x01\x00"
    return pb.SubscribeResponse(event=pb.Event.FromString(wire))  # field 21, empty


def test_an_unknown_payload_is_delivered_as_kind_unknown_and_the_stream_goes_on(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    client = BudgetClient(served.target, interceptors=[Rewrite(newer_payload)])
    with client, client.subscribe() as events:
        wait_until(lambda: subscribers(served) == 1, "the subscription")
        client.consume(THREAD, Usage(1))
        client.consume(THREAD, Usage(2))
        unknown, known = next(events), next(events)
    assert (unknown.seq, unknown.kind, unknown.payload) == (1, EventKind.unknown, Unknown(""))
    assert unknown.labels == {"thread": "t1"}
    assert known.kind is EventKind.usage_recorded and isinstance(known.payload, UsageRecorded)
    assert "delivered as kind unknown" in caplog.text


def test_a_known_payload_with_an_unknown_enum_value_is_kind_unknown() -> None:
    run_ended = client_pb.Event.RunEnded(run_id="r", reason=99)  # type: ignore[arg-type]
    ended = client_pb.Event(seq=4, run_ended=run_ended)
    event = event_wire.event(ended)
    assert (event.seq, event.kind, event.payload) == (4, EventKind.unknown, Unknown("run_ended"))
