"""Coalescing for `BudgetClient`: calls from many threads gathered onto one BatchStream.

Everything happens under one lock. A caller queues its operation and, when that makes a
batch due (`_batching.Gathering.due`), sends the batch itself: sending only puts it in
the queue gRPC's own thread feeds the stream from, so a lone caller costs no extra
thread hand-over. The stream's reader thread wakes the callers of each answer and sends
the next batch when the answer made one due; a timer thread, started at the first
window, sends a batch whose window ended while batches were in flight.

Each attempt waits at most `timeout_s` for its answer, like a unary call's deadline; one
that runs out is retried (DEADLINE_EXCEEDED), and when the oldest batch in flight has
waited that long too, the stream is cancelled (a stuck stream or daemon) so the next
attempt opens a new one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from budgetd_client._batching import (
    KINDS,
    UNBATCHED,
    Gathering,
    Op,
    Outcome,
    Settled,
    answer_of,
    timed_out,
)
from budgetd_client._transport import Transport, _Attempts
from budgetd_client.coalescing import Coalescing, CoalescingStats
from budgetd_client.errors import ClientClosed
from budgetd_client.v1 import budget_pb2 as pb

log = logging.getLogger("budgetd_client")


class Coalescer:
    """The blocking client's coalescer: `unary()` as `Transport.unary` for the five
    operations a batch can carry (`carries`)."""

    def __init__(self, transport: Transport, coalescing: Coalescing) -> None:
        self._transport = transport
        self._settings = transport.settings
        self._gathering = Gathering(coalescing)
        self._cond = threading.Condition()
        self._stream: _Stream | None = None
        self._timer: threading.Thread | None = None
        self._timer_at: float | None = None
        self._room_waiters = 0
        self._closed = False

    @staticmethod
    def carries(method: str) -> bool:
        return method in KINDS

    def stats(self) -> CoalescingStats:
        with self._cond:
            return self._gathering.stats(self._room_waiters)

    def unary(self, method: str, request: Message) -> Any:
        """The answer to `request` as `Transport.unary` gives it: the same retries (with
        the same request), breaker and typed exceptions."""
        plan = _Attempts(self._settings, self._transport.breaker, False, None)
        try:
            while True:
                outcome = self._attempt(method, request)
                if outcome is UNBATCHED:
                    plan.handed_over()
                    left = plan.retries - plan.attempt
                    return self._transport.unary(method, request, force=True, retries=left)
                answer = answer_of(plan, outcome)
                if answer is not None:
                    return answer
                time.sleep(plan.delay())
        finally:
            plan.abandoned()

    def _attempt(self, method: str, request: Message) -> Outcome:
        done = threading.Lock()
        done.acquire()
        op = Op(method, request, done.release)
        deadline = time.monotonic() + self._settings.timeout_s
        with self._cond:
            if self._closed:
                raise ClientClosed("the client is closed")
            now = time.monotonic()
            if not self._gathering.batches(op, now):
                return UNBATCHED
            if not self._wait_for_room(deadline):
                return timed_out()
            now = time.monotonic()  # its window starts once it is queued
            self._gathering.add(op, now)
            self._send_due(now)
        answered = done.acquire(timeout=max(0.0, deadline - time.monotonic()))
        with self._cond:
            if not answered and op.outcome is None:
                self._give_up(op, time.monotonic())
                return timed_out()
        assert op.outcome is not None
        return op.outcome

    def _wait_for_room(self, deadline: float) -> bool:
        """Backpressure: at `max_pending`, wait (within the deadline) for answers."""
        while not self._gathering.has_room:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._room_waiters += 1
            try:
                self._cond.wait(left)
            finally:
                self._room_waiters -= 1
            if self._closed:
                raise ClientClosed("the client is closed")
        return True

    def _give_up(self, op: Op, now: float) -> None:
        if self._gathering.withdraw(op):
            self._room_freed()
        elif self._stream is not None and self._gathering.stalled(now, self._settings.timeout_s):
            log.info("budgetd_client: no answer on the batch stream for timeout_s; reopening")
            self._stream.cancel()

    # --- sending (under the lock) ----------------------------------------------------------

    def _send_due(self, now: float) -> None:
        while self._gathering.due(now):
            stream = self._stream or self._open()
            if stream is None:
                return
            stream.send(self._gathering.take(now))
        self._arm_timer()

    def _open(self) -> _Stream | None:
        try:
            self._transport.hold()  # the channel stays open while the stream runs
        except ClientClosed as closed:
            self._settle([(op, closed) for op in self._gathering.drop_pending()])
            return None
        try:
            self._stream = _Stream(self._transport, self._answered, self._ended)
        except BaseException:
            self._transport.let_go()
            raise
        self._gathering.streams += 1
        return self._stream

    def _arm_timer(self) -> None:
        at = self._gathering.wake_at()
        if at is None or self._closed:
            return
        if self._timer is None:
            self._timer = threading.Thread(
                target=self._time_windows, name="budgetd-batch-timer", daemon=True
            )
            self._timer.start()
        elif self._timer_at is None or at < self._timer_at:
            self._cond.notify_all()

    def _time_windows(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                self._send_due(now)
                at = self._timer_at = self._gathering.wake_at()
                self._cond.wait(None if at is None else max(0.0, at - now))
            self._timer = None

    # --- answers (the reader thread) -------------------------------------------------------

    def _answered(self, stream: _Stream, response: pb.BatchStreamResponse) -> None:
        with self._cond:
            if stream is not self._stream:
                return
            self._settle(self._gathering.answered(response))
            self._send_due(time.monotonic())
            self._room_freed()

    def _ended(self, stream: _Stream, code: grpc.StatusCode, details: str) -> None:
        with self._cond:
            if stream is self._stream:
                self._stream = None
                now = time.monotonic()
                self._settle(self._gathering.broke(code, details, now))
                self._send_due(now)  # what is still queued goes on a new stream
                self._cond.notify_all()
        self._transport.let_go()

    def _settle(self, settled: Settled) -> None:
        for op, outcome in settled:
            op.settle(outcome)

    def _room_freed(self) -> None:
        if self._room_waiters or self._closed:  # close() waits for the queue to drain
            self._cond.notify_all()

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new calls; send what is queued at once and wait (at most `timeout_s`)
        for the answers the callers wait for; then end the stream (cancel it when the
        daemon does not end it within `timeout_s` more)."""
        timeout_s = self._settings.timeout_s
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._gathering.window_s = 0.0
            self._send_due(time.monotonic())
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._gathering.idle, timeout_s)
            stream = self._stream
            if stream is None:
                return
            stream.end()
            ended = self._cond.wait_for(lambda: self._stream is not stream, timeout_s)
        if not ended:
            stream.cancel()


class _Stream:
    """One BatchStream call: requests go through a queue that gRPC's thread iterates;
    answers are read by a thread of its own until the stream ends."""

    def __init__(
        self,
        transport: Transport,
        answered: Callable[[_Stream, pb.BatchStreamResponse], None],
        ended: Callable[[_Stream, grpc.StatusCode, str], None],
    ) -> None:
        self._requests: queue.SimpleQueue[pb.BatchStreamRequest | None] = queue.SimpleQueue()
        self._answered = answered
        self._ended = ended
        self._call = transport.batch_stream(iter(self._requests.get, None))
        threading.Thread(target=self._read, name="budgetd-batch-stream", daemon=True).start()

    def send(self, request: pb.BatchStreamRequest) -> None:
        self._requests.put(request)

    def end(self) -> None:
        """Half-close: the daemon answers what it has, then ends the stream."""
        self._requests.put(None)

    def cancel(self) -> None:
        self._call.cancel()
        self._requests.put(None)

    def _read(self) -> None:
        code, details = grpc.StatusCode.OK, "the daemon ended the stream"
        try:
            for response in self._call:
                self._answered(self, response)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or error.code().name
        except Exception:  # a bug of ours: the stream's callers must not wait for ever
            log.exception("budgetd_client: the batch stream's reader failed")
            self._call.cancel()
            code, details = grpc.StatusCode.INTERNAL, "the batch stream's reader failed"
        finally:
            self._requests.put(None)  # gRPC's feeding thread may be waiting in get()
        self._ended(self, code, details)
