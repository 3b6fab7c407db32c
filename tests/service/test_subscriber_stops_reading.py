"""A subscriber that stops reading is cut off after a bounded time, even when no new
event arrives: it is stuck in a send, so no read of the log ever checks its lag again.

The client is raw HTTP/2 (`tests.stalled_subscriber`): a small flow-control window that
it never grows. Every wait is on a condition, with a generous bound only so that a
broken server fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import grpc
import pytest

from budgetd.runtime import Durability
from budgetd.v1 import budget_pb2 as pb
from tests.auth_support import ACK, PREFACE, SETTINGS, frame
from tests.service.support import Served
from tests.stalled_subscriber import (
    WINDOW_UPDATE,
    StalledSubscriber,
    stalled_on_unix,
    subscribe_frames,
    window_settings,
)
from tests.waiting import wait_until

SEND_TIMEOUT_S = 0.2
WAIT_S = 30.0
LABELS = {"agent": "a", "thread": "t"}
EVENTS = 20  # UsageRecorded events of ~190 bytes each: far more than the window
CUT_OFF = "subscriber cut off: stopped reading"


def _consume(i: int) -> pb.ConsumeRequest:
    usage = pb.Usage(input_tokens=10, model="gpt-4o")
    return pb.ConsumeRequest(request_id=f"c{i}", labels=LABELS, usage=usage)


def _tasks(served: Served) -> int:
    return served.in_loop(lambda: len(asyncio.all_tasks()))


def _until(condition: Callable[[], bool], what: str, between: Callable[[], None]) -> int:
    """Wait for `condition` (bounded by WAIT_S), calling `between` each round; how many
    rounds it took."""
    return wait_until(condition, what, limit_s=WAIT_S, between=between)


def _stall(served: Served, window: int) -> StalledSubscriber:
    """A stalled subscriber, registered, with EVENTS published after it: more than its
    window holds. Returns once they are published; no event is published after."""
    stalled = stalled_on_unix(str(served.socket), pb.SubscribeRequest(), window, WAIT_S)
    assert stalled.resume_after() == "0"  # the initial metadata is not flow-controlled
    events = served.runtime.events
    _until(lambda: events.subscriber_count == 1, "subscribed", lambda: None)
    assert served.bounds.total == 1
    for i in range(EVENTS):
        assert served.budget.Consume(_consume(i), timeout=WAIT_S).ledgers
    return stalled


def _still_answering(served: Served, last_seq: int = EVENTS) -> Callable[[], None]:
    """Unary calls answer while the subscriber is stuck: Check, Consume (a retry of the
    last one: answered, and no new event) and GetServerInfo (no event published)."""
    check = pb.CheckRequest(labels=LABELS, estimate=pb.Usage(input_tokens=1, model="gpt-4o"))

    def probe() -> None:
        assert served.budget.Check(check, timeout=WAIT_S).decision == pb.DECISION_ALLOW
        assert served.budget.Consume(_consume(last_seq - 1), timeout=WAIT_S).ledgers
        info = served.admin.GetServerInfo(pb.GetServerInfoRequest(), timeout=WAIT_S)
        assert info.last_event_seq == last_seq

    return probe


def _cut_off_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == CUT_OFF]


def _no_grpc_complaints(caplog: pytest.LogCaptureFixture) -> None:
    complaints = [r for r in caplog.records if r.name.startswith("grpc") and r.levelno >= 30]
    assert not complaints, [r.getMessage() for r in complaints]


def test_a_subscriber_that_stops_reading_is_cut_off_and_told_where_to_resume(
    make_served: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = make_served(send_timeout_s=SEND_TIMEOUT_S)
    tasks = _tasks(served)
    with caplog.at_level(logging.WARNING), _stall(served, window=1000) as stalled:
        events = served.runtime.events
        probed = _until(lambda: events.subscriber_count == 0, "cut off", _still_answering(served))
        info = served.admin.GetServerInfo(pb.GetServerInfoRequest(), timeout=WAIT_S)
        assert info.subscribers == 0
        _until(lambda: served.bounds.total == 0, "its stream slot freed", lambda: None)
        (line,) = _cut_off_lines(caplog)
        delivered = line.fields["resume_after"]  # type: ignore[attr-defined]
        # The window took a few whole messages, and part of the next one.
        assert [m.event.seq for m in stalled.messages()] == list(range(1, delivered + 1))
        assert 0 < delivered < EVENTS

        # Reading again, the client gets the message in flight, then the status.
        stalled.grant()
        code, message = stalled.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert message == (
            f"subscriber stopped reading for {SEND_TIMEOUT_S:g} s; "
            f"resume with after_seq={delivered}"
        )
        assert [m.event.seq for m in stalled.messages()] == list(range(1, delivered + 2))
    # Nothing is left of the call: no task of it on the server's loop, no grpc error.
    _until(lambda: _tasks(served) == tasks, "its tasks gone", lambda: None)
    _no_grpc_complaints(caplog)
    print(f"cut off after {probed} rounds of Check/Consume/GetServerInfo, all answered")

    # Resuming where the status says: from the event in flight on.
    resumed = served.budget.Subscribe(pb.SubscribeRequest(after_seq=delivered), timeout=WAIT_S)
    assert next(iter(resumed)).event.seq == delivered + 1
    resumed.cancel()


def test_a_client_that_never_reads_again_loses_its_slots_at_the_bound(
    make_served: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    served = make_served(send_timeout_s=SEND_TIMEOUT_S, max_subscribers=1)
    tasks = _tasks(served)
    with caplog.at_level(logging.WARNING), _stall(served, window=0) as stalled:
        events = served.runtime.events
        _until(lambda: events.subscriber_count == 0, "cut off", _still_answering(served))
        _until(lambda: served.bounds.total == 0, "its stream slot freed", lambda: None)
        (line,) = _cut_off_lines(caplog)
        assert line.fields["resume_after"] == 0  # type: ignore[attr-defined]
        assert stalled.messages() == [] and not stalled.ended  # no status could go out

        # Its subscriber slot (the only one) is free: a new subscriber gets in and reads.
        fresh = served.budget.Subscribe(pb.SubscribeRequest(after_seq=0), timeout=WAIT_S)
        assert next(iter(fresh)).event.seq == 1
        fresh.cancel()
    # What gRPC itself keeps of the stuck call goes with its connection.
    _until(lambda: _tasks(served) == tasks, "its tasks gone", lambda: None)
    _no_grpc_complaints(caplog)


def test_a_connection_too_stuck_for_initial_metadata_loses_its_calls_quietly(
    make_served: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that stopped reading its socket at all: once the socket's buffers are
    full not even a new call's initial metadata goes out (no status can, then)."""
    served = make_served(
        send_timeout_s=SEND_TIMEOUT_S,
        max_lag=100_000,
        retention=100_000,
        durability=Durability.MEMORY,  # many events, quickly
    )
    tasks, events = _tasks(served), served.runtime.events
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deaf.connect(str(served.socket))
    largest = (2**31 - 1).to_bytes(4, "big")
    with deaf, caplog.at_level(logging.WARNING):
        # HTTP/2 windows as large as they go: only the socket's buffers hold sends back.
        deaf.sendall(
            PREFACE
            + window_settings(2**31 - 1)
            + frame(SETTINGS, ACK)
            + frame(WINDOW_UPDATE, 0, largest)
            + subscribe_frames(pb.SubscribeRequest())
        )
        _until(lambda: events.subscriber_count == 1, "subscribed", lambda: None)
        published = 0
        while not _cut_off_lines(caplog):  # until the buffers are full and a send waited
            assert published < 50_000, "the socket's buffers never filled"
            for _ in range(200):
                assert served.budget.Consume(_consume(published), timeout=WAIT_S).ledgers
                published += 1
        # A second call on the connection: its initial metadata cannot go out.
        deaf.sendall(subscribe_frames(pb.SubscribeRequest(), stream=3))

        def second_cut_off() -> bool:
            return len(_cut_off_lines(caplog)) == 2

        _until(second_cut_off, "the second call cut off", _still_answering(served, published))
        assert _cut_off_lines(caplog)[1].fields["resume_after"] == published  # type: ignore[attr-defined]
        assert events.subscriber_count == 0
        _until(lambda: served.bounds.total == 0, "their stream slots freed", lambda: None)
        _no_grpc_complaints(caplog)
        deaf.shutdown(socket.SHUT_RDWR)
    # What gRPC itself keeps of the stuck calls goes with their connection.
    _until(lambda: _tasks(served) == tasks, "their tasks gone", lambda: None)
