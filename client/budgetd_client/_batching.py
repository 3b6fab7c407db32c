"""What coalescing decides, without I/O or threads: which calls go together, when, and
what each caller gets from the answer. The sync (`_coalesce_sync`) and the asyncio
(`_coalesce_aio`) drivers only move messages and wake callers, under their own lock or
on their own loop.

When a batch goes: at once when no batch is in flight (a lone caller never waits for a
window with nobody else in it); otherwise when it is full (`max_operations`, or the
message size the contract allows) or when its first operation has waited `window_us`.
While IN_FLIGHT_BATCHES batches await their answers nothing more is sent: calls gather
meanwhile, so batches grow with the load instead of the stream filling with small ones.

What each caller gets is what its unary call would have given: the response message of
its RPC, or the status its RPC would have ended with (`Refused`, a `grpc.RpcError` that
`errors.from_rpc_error` maps as it maps any other), or UNBATCHED (make the unary call
itself: an operation too large to batch, a daemon that refuses streams right now or
does not know BatchStream). A broken stream is not the answer of the operations on it:
they are failed as UNAVAILABLE, which the retry rules resend with the same request (the
same request_id, so the daemon answers one that did arrive from memory; Check is a read).
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import grpc
from google.protobuf.message import Message

from budgetd_client.coalescing import Coalescing, CoalescingStats
from budgetd_client.errors import BudgetdError
from budgetd_client.retry import NOT_ALLOWED
from budgetd_client.v1 import budget_pb2 as pb

log = logging.getLogger("budgetd_client")

# RPC name -> its field in BatchOperation and in BatchResult.
KINDS: Final = {
    "Check": "check",
    "Reserve": "reserve",
    "Commit": "commit",
    "Release": "release",
    "Consume": "consume",
}
# The contract's bound on any message; the rest of a BatchStreamRequest (its sequence,
# the tags and lengths around the batch) fits in the margin.
MAX_MESSAGE_BYTES = 64 * 1024
ENVELOPE_BYTES = 64
# Batches awaiting their answers at once: one being carried out while the next travels.
# More (the daemon reads up to 8 ahead) makes batches smaller and each operation dearer:
# measured with 64 callers, 8 cost about 40 % more CPU per operation on both sides
# than 2 for no steady gain in throughput.
IN_FLIGHT_BATCHES = 2
# After the daemon refused a stream (RESOURCE_EXHAUSTED: its stream bound, a message too
# large), calls go unary for this long before a stream is tried again.
BUSY_S = 1.0

_CODES = {code.value[0]: code for code in grpc.StatusCode}
# "operations[3].consume.usage.input_tokens: ..." / "operations[3].commit: reservation ...":
# the place in a batch the caller never saw is taken out, leaving the unary message.
_PLACE = re.compile(r"operations\[\d+\]\.(?:check|reserve|commit|release|consume)(?:\.|: )")
_BOUND = re.compile(r"must hold 1\.\.(\d+) operations")
_SIZE = re.compile(r"larger than max \(\d+ vs\. (\d+)\)")


class Refused(grpc.RpcError):
    """The status one operation ended with, as its unary call would have (the same
    `code()` and `details()`, so the same typed exception)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Unbatched:
    def __repr__(self) -> str:
        return "UNBATCHED"


UNBATCHED: Final = _Unbatched()
# A response message, a status, "make the unary call", or an error to raise as it is.
Outcome = Message | Refused | _Unbatched | Exception


def timed_out() -> Refused:
    return Refused(
        grpc.StatusCode.DEADLINE_EXCEEDED, "no answer on the batch stream within timeout_s"
    )


def status(number: int) -> grpc.StatusCode:
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


class Op:
    """One caller's operation on its way: `wake()` tells the caller `outcome` is set."""

    __slots__ = ("abandoned", "kind", "operation", "outcome", "sequence", "since", "size", "wake")

    def __init__(self, method: str, request: Message, wake: Callable[[], None]) -> None:
        self.kind = KINDS[method]
        self.operation = pb.BatchOperation()
        getattr(self.operation, self.kind).CopyFrom(request)
        body = self.operation.ByteSize()
        self.size = body + 1 + _varint_size(body)  # as one entry of BatchRequest.operations
        self.wake = wake
        self.outcome: Outcome | None = None
        self.since = 0.0
        self.sequence = 0
        self.abandoned = False  # its caller stopped waiting (deadline, cancellation)

    def settle(self, outcome: Outcome) -> None:
        if self.outcome is None and not self.abandoned:
            self.outcome = outcome
            self.wake()


Settled = list[tuple[Op, Outcome]]


class Gathering:
    """The queue of operations waiting for a batch and the batches awaiting their
    answers on the current stream. Not thread-safe: its driver serialises the calls."""

    def __init__(self, settings: Coalescing) -> None:
        self.window_s = settings.window_us / 1e6
        self.max_pending = settings.max_pending
        self.bound = settings.max_operations  # lowered by what the daemon refuses
        self.byte_budget = MAX_MESSAGE_BYTES - ENVELOPE_BYTES
        self.pending: deque[Op] = deque()
        self.pending_bytes = 0
        self.in_flight: dict[int, tuple[float, list[Op]]] = {}  # sequence -> (sent, ops)
        self.in_flight_ops = 0
        self.sequence = 0
        self.unary_until = 0.0  # the daemon refused streams: unary calls until then
        self.unsupported = False  # the daemon does not know BatchStream
        self.batches_sent = 0
        self.operations_sent = 0
        self.streams = 0

    def stats(self, waiting: int) -> CoalescingStats:
        return CoalescingStats(
            self.batches_sent,
            self.operations_sent,
            self.streams,
            len(self.pending),
            waiting,
            self.bound,
        )

    # --- callers -------------------------------------------------------------------------

    def batches(self, op: Op, now: float) -> bool:
        """Whether `op` may go in a batch now (else its caller makes the unary call)."""
        return not self.unsupported and now >= self.unary_until and op.size <= self.byte_budget

    @property
    def has_room(self) -> bool:
        return len(self.pending) + self.in_flight_ops < self.max_pending

    @property
    def idle(self) -> bool:
        return not self.pending and not self.in_flight

    def add(self, op: Op, now: float) -> None:
        op.since = now
        self.pending.append(op)
        self.pending_bytes += op.size

    def withdraw(self, op: Op) -> bool:
        """Its caller gives up on `op`: True when it was still queued (never sent)."""
        op.abandoned = True
        try:
            self.pending.remove(op)
        except ValueError:
            return False
        self.pending_bytes -= op.size
        return True

    def drop_pending(self) -> list[Op]:
        """Empty the queue (no stream can be had): its operations, to settle."""
        ops = list(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return ops

    def stalled(self, now: float, timeout_s: float) -> bool:
        """The oldest batch in flight has waited `timeout_s` for its answer: the stream
        (or the daemon) is stuck, and waiting longer on it is pointless."""
        oldest = next(iter(self.in_flight.values()), None)
        return oldest is not None and now - oldest[0] >= timeout_s

    # --- sending -------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """A batch should be sent now."""
        if not self.pending or len(self.in_flight) >= IN_FLIGHT_BATCHES:
            return False
        if not self.in_flight or self._full:
            return True
        return now >= self.pending[0].since + self.window_s

    def wake_at(self) -> float | None:
        """When the oldest queued operation's window ends (None: no timer is needed,
        the next answer or call decides)."""
        if not self.pending or not self.in_flight or len(self.in_flight) >= IN_FLIGHT_BATCHES:
            return None
        return self.pending[0].since + self.window_s

    @property
    def _full(self) -> bool:
        return len(self.pending) >= self.bound or self.pending_bytes >= self.byte_budget

    def take(self, now: float) -> pb.BatchStreamRequest:
        """The next batch (call only when `due`), now in flight."""
        ops: list[Op] = []
        size = 0
        while self.pending and len(ops) < self.bound:
            head = self.pending[0]
            if ops and size + head.size > self.byte_budget:
                break
            self.pending.popleft()
            size += head.size
            ops.append(head)
        self.pending_bytes -= size
        self.sequence += 1
        for op in ops:
            op.sequence = self.sequence
        self.in_flight[self.sequence] = (now, ops)
        self.in_flight_ops += len(ops)
        self.batches_sent += 1
        self.operations_sent += len(ops)
        batch = pb.BatchRequest(operations=[op.operation for op in ops])
        return pb.BatchStreamRequest(sequence=self.sequence, batch=batch)

    # --- answers -------------------------------------------------------------------------

    def answered(self, response: pb.BatchStreamResponse) -> Settled:
        """What the callers of one answered batch get (a refused batch may go back to
        the queue, split, instead)."""
        sent = self.in_flight.pop(response.sequence, None)
        if sent is None:  # not a batch of this stream: nobody waits for it
            return []
        ops = sent[1]
        self.in_flight_ops -= len(ops)
        if response.WhichOneof("result") == "error":
            return self._refused(ops, status(response.error.code), response.error.message)
        results = response.response.results
        if len(results) != len(ops):
            wrong = f"the daemon answered {len(results)} results for {len(ops)} operations"
            return [(op, Refused(grpc.StatusCode.INTERNAL, wrong)) for op in ops]
        return [(op, _outcome(op, result)) for op, result in zip(ops, results, strict=True)]

    def _refused(self, ops: list[Op], code: grpc.StatusCode, message: str) -> Settled:
        """A batch the daemon refused whole. Too many operations (its
        server.max_batch_operations is lower than ours, e.g. after a restart with
        another configuration): learn its bound and send them again in smaller batches.
        Any other refusal is each operation's answer."""
        if code is grpc.StatusCode.INVALID_ARGUMENT and len(ops) > 1:
            found = _BOUND.search(message)
            told = int(found.group(1)) if found else 0
            self.bound = max(1, told if 0 < told < len(ops) else len(ops) // 2)
            log.info("budgetd_client: the daemon takes at most %d operations a batch", self.bound)
            self._requeue(ops)
            return []
        return [(op, Refused(code, _unplaced(message))) for op in ops]

    def _requeue(self, ops: list[Op]) -> None:
        """Back to the head of the queue, in their order (ahead of newer calls)."""
        for op in reversed(ops):
            if not op.abandoned:
                self.pending.appendleft(op)
                self.pending_bytes += op.size

    def broke(self, code: grpc.StatusCode, details: str, now: float) -> Settled:
        """The stream ended (`code` OK: the daemon closed it) with batches unanswered:
        what their callers get. Queued operations wait for the next stream, unless
        there is none to be had (then they go unary too)."""
        ops = [op for _, batch in self.in_flight.values() for op in batch]
        self.in_flight.clear()
        self.in_flight_ops = 0
        outcome = self._after_break(code, details, now)
        if outcome is UNBATCHED:
            ops.extend(self.drop_pending())
        return [(op, outcome) for op in ops]

    def _after_break(self, code: grpc.StatusCode, details: str, now: float) -> Outcome:
        if code is grpc.StatusCode.UNIMPLEMENTED:
            self.unsupported = True
            log.warning("budgetd_client: the daemon has no BatchStream; coalescing is off")
            return UNBATCHED
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            too_large = _SIZE.search(details)
            if too_large:  # a daemon with a lower max_message_bytes than the contract's
                self.byte_budget = max(1024, int(too_large.group(1)) - ENVELOPE_BYTES)
            self.unary_until = now + BUSY_S
            log.info("budgetd_client: batch stream refused (%s); unary calls for now", details)
            return UNBATCHED
        if code in NOT_ALLOWED:  # the gate refuses this caller, as it would each call
            return Refused(code, details)
        return Refused(
            grpc.StatusCode.UNAVAILABLE,
            f"the batch stream ended before answering ({code.name}: {details})",
        )


class Plan(Protocol):
    """The retry plan of one call (`_transport._Attempts`)."""

    def answered(self) -> None: ...
    def failed(self, error: grpc.RpcError) -> BudgetdError | None: ...


def answer_of(plan: Plan, outcome: Outcome) -> Message | None:
    """The response for the caller, or None to retry after the plan's delay; raises the
    typed exception its unary call would have raised. (UNBATCHED is the driver's.)"""
    if isinstance(outcome, Refused):
        typed = plan.failed(outcome)
        if typed is None:
            return None
        raise typed from outcome
    if isinstance(outcome, Exception):
        raise outcome
    assert isinstance(outcome, Message), outcome
    plan.answered()
    return outcome


def _outcome(op: Op, result: pb.BatchResult) -> Outcome:
    which = result.WhichOneof("result")
    if which == "error":
        return Refused(status(result.error.code), _unplaced(result.error.message))
    if which != op.kind:
        return Refused(grpc.StatusCode.INTERNAL, f"the daemon answered a {op.kind} with {which}")
    answer: Message = getattr(result, which)
    return answer


def _unplaced(message: str) -> str:
    return _PLACE.sub("", message)


def _varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size
