"""Fuzz every RPC through the real gRPC server: no INTERNAL, no UNKNOWN, no changed ledger.

Goal: whatever bytes a client sends to any method of BudgetService, BudgetAdminService,
health or reflection, the answer is OK or a documented status code (the status of the
call, and each error a stream carries inside its messages), and a rejected call leaves
the engine exactly as it was. Streams opened and then dropped mid-way (cancelled, or
their connection closed) give back their slots: as many streams as the bounds allow
open again afterwards, and every ConsumeStream message that was answered was applied
once.

Method: one in-process server per module (`tests.service.support.serve`: the real
runtime, journal durability, the real gate), called over its Unix socket with identity
serializers so the fuzzer chooses every byte. Requests come from the descriptors
(`tests.fuzz.strategies`); ids the server hands out (reservations, runs, ledger keys)
are fed back into later requests. The engine's exported state is compared before and
after every rejected call.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetd.v1 import budget_pb2 as pb
from tests.fuzz.calls import RPCS, Answer, Harvest, Rpc, call, draw_requests
from tests.fuzz.counts import COUNTS
from tests.fuzz.profile import fuzz
from tests.service.support import Served, serve
from tests.waiting import wait_until

# Examples per RPC: requests with fields are fuzzed longer than those without.
EXAMPLES_WITH_FIELDS = 60
EXAMPLES_EMPTY = 12
SNAPSHOT_EXAMPLES = 6  # each forks a child that writes the state: slow, and tested apart
GARBAGE = b"\x0a\x7f\x01\x02"  # field 1, length-delimited, claiming 127 bytes it lacks


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("fuzz-grpc"), max_subscribers=8, max_streams=4)


@pytest.fixture(scope="module")
def harvest() -> Harvest:
    return Harvest()


def _examples(rpc: Rpc) -> int:
    if rpc.path.endswith("/Snapshot"):
        return SNAPSHOT_EXAMPLES
    return EXAMPLES_WITH_FIELDS if rpc.request.fields else EXAMPLES_EMPTY


def _state(served: Served) -> dict[str, Any]:
    return served.in_loop(lambda: served.runtime.engine.export_state(plain_answers=False))


def check_answer(served: Served, rpc: Rpc, requests: list[bytes], harvest: Harvest) -> Answer:
    """One call, held to the rules; what it answered (for the caller's own checks)."""
    before = _state(served)
    answer = call(served.channel, rpc, requests)
    COUNTS.record(f"in-process {rpc.name}", answer.outcome, max(len(requests), 1))
    assert not answer.problems(), (rpc.path, requests, answer.problems())
    if answer.rejected:
        assert _state(served) == before, f"{rpc.path} rejected {requests!r} but changed state"
    harvest.take(answer)
    return answer


def _fuzz_one(rpc: Rpc) -> Callable[..., None]:
    @fuzz(_examples(rpc))
    @given(data=st.data())
    def run(served: Served, harvest: Harvest, data: st.DataObject) -> None:
        check_answer(served, rpc, draw_requests(data, rpc, harvest), harvest)

    return run


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.name for rpc in RPCS])
def test_every_rpc_answers_documented_codes_and_rejections_change_nothing(
    served: Served, harvest: Harvest, rpc: Rpc
) -> None:
    _fuzz_one(rpc)(served, harvest)


def test_the_table_has_every_rpc_the_server_registers() -> None:
    """The fuzzer's methods are the descriptors' (a new RPC is fuzzed without an edit)."""
    paths = {rpc.path for rpc in RPCS}
    assert len(paths) == len(RPCS) == 28  # 16 + 7 + health 3 + reflection 2
    assert "/budgetd.v1.BudgetService/ConsumeStream" in paths
    assert "/grpc.health.v1.Health/Watch" in paths
    assert "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in paths


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.name for rpc in RPCS])
def test_undecodable_bytes_are_invalid_argument_on_every_rpc(served: Served, rpc: Rpc) -> None:
    """Bytes that are no message of the method: INVALID_ARGUMENT naming the method
    (never UNKNOWN with the parser's exception), nothing changed."""
    before = _state(served)
    answer = call(served.channel, rpc, [GARBAGE])
    COUNTS.record(f"in-process undecodable {rpc.name}", answer.outcome)
    assert answer.code is grpc.StatusCode.INVALID_ARGUMENT, (answer.code, answer.details)
    assert rpc.path in answer.details
    assert _state(served) == before


# --- streams dropped mid-way -----------------------------------------------------------

SUBSCRIBE = "/budgetd.v1.BudgetService/Subscribe"
CONSUME_STREAM = "/budgetd.v1.BudgetService/ConsumeStream"
WATCH = "/grpc.health.v1.Health/Watch"
_TAGS = itertools.count()  # each abandoned ConsumeStream has request ids of its own


def _consume(tag: str, i: int) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(
        request_id=f"{tag}-{i}",
        labels={"agent": "drop", "thread": tag},
        usage=pb.Usage(input_tokens=1 + i, model="gpt-4o"),
    )


class _Feed:
    """A request stream that sends `count` messages, then waits until let go: the
    client side of a stream abandoned with messages in flight."""

    def __init__(self, tag: str, count: int) -> None:
        self.tag, self.count = tag, count
        self.release = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self.count):
            item = pb.ConsumeStreamRequest(sequence=i, request=_consume(self.tag, i))
            yield item.SerializeToString()
        self.release.wait()


def _abandon_consume_stream(channel: grpc.Channel, tag: str, sent: int, read: int, how: str) -> int:
    """Open a ConsumeStream, send `sent` messages, read `read` answers, drop it; the
    answers read (each one says its message was applied)."""
    feed = _Feed(tag, sent)
    answers: Any = channel.stream_stream(CONSUME_STREAM, None, None)(iter(feed), timeout=60)
    got = 0
    for _ in range(min(read, sent)):
        answer = pb.ConsumeStreamResponse.FromString(next(answers))
        assert answer.HasField("response"), answer
        got += 1
    if how == "cancel":
        answers.cancel()
    else:
        channel.close()
    feed.release.set()
    return got


def _abandon_server_stream(channel: grpc.Channel, path: str, request: bytes, how: str) -> None:
    stream: Any = channel.unary_stream(path, None, None)(request, timeout=60)
    stream.initial_metadata()
    assert not stream.done(), (path, stream.code(), stream.details())
    if how == "cancel":
        stream.cancel()
    else:
        channel.close()


def _eventually(served: Served, condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition()` holds on the server's loop."""
    wait_until(
        lambda: served.in_loop(condition), "the server gave the dropped streams back", limit_s=60
    )


@fuzz(25)
@given(
    kind=st.sampled_from(("subscribe", "consume", "watch")),
    sent=st.integers(0, 40),
    read=st.integers(0, 40),
    how=st.sampled_from(("cancel", "close")),
    after_seq=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
def _abandon(
    served: Served, kind: str, sent: int, read: int, how: str, after_seq: int | None
) -> None:
    channel = grpc.insecure_channel(served.target)
    if kind == "consume":
        tag = f"drop-{next(_TAGS)}"
        got = _abandon_consume_stream(channel, tag, sent, read, how)
        _retries_replay(served, tag, got)
    elif kind == "subscribe":
        request = pb.SubscribeRequest(after_seq=after_seq) if after_seq is not None else None
        data = (request or pb.SubscribeRequest()).SerializeToString()
        _abandon_server_stream(channel, SUBSCRIBE, data, how)
    else:
        _abandon_server_stream(channel, WATCH, b"", how)
    channel.close()
    COUNTS.record("in-process abandoned streams", f"{kind} {how}")
    runtime = served.runtime
    _eventually(served, lambda: runtime.streams == 0 and runtime.events.subscriber_count == 0)


def _retries_replay(served: Served, tag: str, answered: int) -> None:
    """Each answered message was applied exactly once: its retry is a replay."""
    for i in range(answered):
        retry = served.budget.Consume(_consume(tag, i), timeout=60)
        assert retry.replayed, (tag, i)


def test_streams_dropped_mid_way_give_their_slots_back(served: Served) -> None:
    _abandon(served)
    # As many streams as the bounds allow open again: nothing was leaked.
    channel = grpc.insecure_channel(served.target)
    streams = []
    for _ in range(8):  # max_subscribers of the module's server
        stream: Any = channel.unary_stream(SUBSCRIBE, None, None)(b"", timeout=60)
        stream.initial_metadata()
        assert not stream.done(), (stream.code(), stream.details())
        streams.append(stream)
    for stream in streams:
        stream.cancel()
    channel.close()
    runtime = served.runtime
    _eventually(served, lambda: runtime.events.subscriber_count == 0)
