"""Coalescing for `AsyncBudgetClient`: calls from many tasks of one event loop gathered
onto one BatchStream.

Everything runs on the client's loop, so no lock is needed. A caller queues its
operation and sends the batch itself when that made one due (`_batching`); the stream
has a writer task (grpc.aio takes one write at a time) and a reader task that wakes the
callers of each answer and sends the next batch when the answer made one due; a loop
timer sends a batch whose window ended while batches were in flight. Deadlines and the
reopening of a stuck stream are those of the blocking client (`_coalesce_sync`).
"""

from __future__ import annotations

import asyncio
import logging
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
from budgetd_client._transport import AsyncTransport, _Attempts
from budgetd_client.coalescing import Coalescing, CoalescingStats
from budgetd_client.errors import BudgetdError, ClientClosed
from budgetd_client.v1 import budget_pb2 as pb

log = logging.getLogger("budgetd_client")
# What read() returns once the daemon ended the stream (grpc-stubs does not declare it).
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]


class AsyncCoalescer:
    """The asyncio client's coalescer: `unary()` as `AsyncTransport.unary`."""

    def __init__(self, transport: AsyncTransport, coalescing: Coalescing) -> None:
        self._transport = transport
        self._settings = transport.settings
        self._gathering = Gathering(coalescing)
        self._stream: _Stream | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._waiters: list[asyncio.Future[None]] = []  # for room, a drain, a stream's end
        self._room_waiters = 0
        self._closed = False

    @staticmethod
    def carries(method: str) -> bool:
        return method in KINDS

    def stats(self) -> CoalescingStats:
        return self._gathering.stats(self._room_waiters)

    async def unary(self, method: str, request: Message) -> Any:
        """See `_coalesce_sync.Coalescer.unary`."""
        plan = _Attempts(self._settings, self._transport.breaker, False, None)
        try:
            while True:
                outcome = await self._attempt(method, request)
                if outcome is UNBATCHED:
                    plan.handed_over()
                    left = plan.retries - plan.attempt
                    return await self._transport.unary(method, request, force=True, retries=left)
                answer = answer_of(plan, outcome)
                if answer is not None:
                    return answer
                await asyncio.sleep(plan.delay())
        finally:
            plan.abandoned()

    async def _attempt(self, method: str, request: Message) -> Outcome:
        self._transport.check_loop()  # ClientClosed, WrongEventLoop
        if self._closed:
            raise ClientClosed("the client is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        op = Op(method, request, lambda: _wake(done))
        now = loop.time()
        if not self._gathering.batches(op, now):
            return UNBATCHED
        deadline = now + self._settings.timeout_s
        if not await self._wait_for_room(deadline):
            return timed_out()
        self._gathering.add(op, loop.time())
        self._send_due(loop.time())
        expiry = loop.call_at(deadline, _wake, done)
        try:
            await done
        except asyncio.CancelledError:  # the caller's task was cancelled: withdraw it
            self._give_up(op, loop.time())
            raise
        finally:
            expiry.cancel()
        if op.outcome is None:  # the deadline woke it
            self._give_up(op, loop.time())
            return timed_out()
        return op.outcome

    async def _wait_for_room(self, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while not self._gathering.has_room:
            self._room_waiters += 1
            try:
                changed = await self._changed(deadline - loop.time())
            finally:
                self._room_waiters -= 1
            if not changed:
                return False
            if self._closed:
                raise ClientClosed("the client is closed")
        return True

    async def _changed(self, timeout_s: float) -> bool:
        """Wait for `_notify()` (False: `timeout_s` passed first)."""
        if timeout_s <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _wake(waiter)

    def _give_up(self, op: Op, now: float) -> None:
        if self._gathering.withdraw(op):
            self._notify()
        elif self._stream is not None and self._gathering.stalled(now, self._settings.timeout_s):
            log.info("budgetd_client: no answer on the batch stream for timeout_s; reopening")
            self._stream.cancel()

    # --- sending -----------------------------------------------------------------------------

    def _send_due(self, now: float) -> None:
        while self._gathering.due(now):
            stream = self._stream or self._open()
            if stream is None:
                return
            stream.send(self._gathering.take(now))
        self._arm_timer()

    def _open(self) -> _Stream | None:
        try:
            call = self._transport.batch_stream()
        except BudgetdError as closed:  # ClientClosed
            for op in self._gathering.drop_pending():
                op.settle(closed)
            return None
        self._stream = _Stream(call, self._answered, self._ended)
        self._gathering.streams += 1
        return self._stream

    def _arm_timer(self) -> None:
        at = self._gathering.wake_at()
        if at is None or self._closed:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(at, self._window_ended)

    def _window_ended(self) -> None:
        self._timer = None
        self._send_due(asyncio.get_running_loop().time())

    # --- answers (the reader task) -------------------------------------------------------------

    def _answered(self, stream: _Stream, response: pb.BatchStreamResponse) -> None:
        if stream is self._stream:
            _settle(self._gathering.answered(response))
            self._send_due(asyncio.get_running_loop().time())
            self._notify()

    def _ended(self, stream: _Stream, code: grpc.StatusCode, details: str) -> None:
        if stream is self._stream:
            self._stream = None
            now = asyncio.get_running_loop().time()
            _settle(self._gathering.broke(code, details, now))
            if not self._transport.closed:
                self._send_due(now)  # what is still queued goes on a new stream
            self._notify()

    # --- lifetime --------------------------------------------------------------------------------

    async def close(self) -> None:
        """As `Coalescer.close`; from another loop than the client's (or once it is gone)
        the stream cannot be awaited and goes with the channel."""
        if self._closed:
            return
        self._closed = True
        stream = self._stream
        if stream is None or not stream.on_running_loop():
            return
        loop = asyncio.get_running_loop()
        self._gathering.window_s = 0.0
        self._send_due(loop.time())
        deadline = loop.time() + self._settings.timeout_s
        while not self._gathering.idle and await self._changed(deadline - loop.time()):
            pass
        stream.end()
        deadline = loop.time() + self._settings.timeout_s
        while self._stream is stream and await self._changed(deadline - loop.time()):
            pass
        if self._stream is stream:
            stream.cancel()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _settle(settled: Settled) -> None:
    for op, outcome in settled:
        op.settle(outcome)


class _Stream:
    """One BatchStream call, with its writer and reader tasks."""

    def __init__(
        self,
        call: Any,
        answered: Callable[[_Stream, pb.BatchStreamResponse], None],
        ended: Callable[[_Stream, grpc.StatusCode, str], None],
    ) -> None:
        self._call = call
        self._answered = answered
        self._ended = ended
        self._outbox: asyncio.Queue[pb.BatchStreamRequest | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._tasks = (
            asyncio.create_task(self._write(), name="budgetd-batch-writer"),
            asyncio.create_task(self._read(), name="budgetd-batch-reader"),
        )

    def on_running_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def send(self, request: pb.BatchStreamRequest) -> None:
        self._outbox.put_nowait(request)

    def end(self) -> None:
        self._outbox.put_nowait(None)

    def cancel(self) -> None:
        self._call.cancel()
        self._outbox.put_nowait(None)

    async def _write(self) -> None:
        try:
            while (request := await self._outbox.get()) is not None:
                await self._call.write(request)
            await self._call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the stream ended: the reader tells how

    async def _read(self) -> None:
        code, details = grpc.StatusCode.OK, "the daemon ended the stream"
        try:
            while (response := await self._call.read()) is not _EOF:
                self._answered(self, response)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or error.code().name
        except asyncio.CancelledError:  # cancelled: by cancel(), or the channel's close
            code, details = grpc.StatusCode.CANCELLED, "the client is closing"
        except Exception:  # a bug of ours: the stream's callers must not wait for ever
            log.exception("budgetd_client: the batch stream's reader failed")
            self._call.cancel()
            code, details = grpc.StatusCode.INTERNAL, "the batch stream's reader failed"
        self._outbox.put_nowait(None)
        self._ended(self, code, details)
