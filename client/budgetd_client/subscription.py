"""Event subscriptions that survive reconnects.

The server ends a stream with UNAVAILABLE when it restarts or drains, and with
RESOURCE_EXHAUSTED when the subscriber fell too far behind (or too many subscribe at
once). Either way nothing is lost: the subscription waits (backoff), subscribes again
with `after_seq` = the last seq it delivered, and the server sends what came after (or
a `Gap` event first, if it no longer retains it). After `retries` consecutive failures
without an event in between, the error is raised. Any other status is raised at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import Any

import grpc

from budgetd.v1 import budget_pb2 as pb
from budgetd_client import _event_wire
from budgetd_client._core import Settings
from budgetd_client._transport import AsyncTransport, Transport
from budgetd_client.errors import BudgetdUnavailable, from_rpc_error
from budgetd_client.events import Event
from budgetd_client.retry import RESUMABLE

_ENDED = "the server ended the event stream"


class _Resumable:
    """The resume point and the failure count both subscriptions keep."""

    def __init__(self, settings: Settings, request: pb.SubscribeRequest) -> None:
        self.settings = settings
        self.last_seq: int | None = request.after_seq if request.HasField("after_seq") else None
        self.reconnects = 0
        self._request = request
        self._failures = 0
        self._closed = False
        self._reading = False  # a thread or task is waiting in next()
        self._call: Any = None

    def _next_request(self) -> pb.SubscribeRequest:
        request = pb.SubscribeRequest()
        request.CopyFrom(self._request)
        if self.last_seq is not None:
            request.after_seq = self.last_seq
        return request

    def _received(self, message: pb.SubscribeResponse) -> Event:
        event = _event_wire.event(message.event)
        self.last_seq = event.seq
        self._failures = 0
        return event

    def _backoff_or_raise(self, error: grpc.RpcError | None) -> float:
        """After a broken stream (`error` None: ended normally): the wait before
        resubscribing, or the typed error when it is not resumable or too many failed."""
        code = grpc.StatusCode.UNAVAILABLE if error is None else error.code()
        if code not in RESUMABLE or self._failures >= self.settings.retries:
            if error is None:
                raise BudgetdUnavailable(_ENDED, code)
            raise from_rpc_error(error, self.settings.target, self._failures + 1) from error
        delay = self.settings.backoff.delay(self._failures)
        self._failures += 1
        self.reconnects += 1
        return delay

    def _resubscribe(self, subscribe: Callable[[pb.SubscribeRequest], Any]) -> None:
        self._call = subscribe(self._next_request())
        if self._closed:  # closed from another thread while we waited
            self._call.cancel()

    def _cancel(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()


class Subscription(_Resumable):
    """An iterator of events for the sync client; `close()` (or `with`) ends it, from any
    thread."""

    def __init__(self, transport: Transport, request: pb.SubscribeRequest) -> None:
        super().__init__(transport.settings, request)
        self._transport = transport
        self._call = transport.subscribe(request)  # now: events from here on are ours
        self._events = self._stream()

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        self._reading = True
        try:
            return next(self._events)
        finally:
            self._reading = False

    def close(self) -> None:
        self._cancel()
        if not self._reading:  # else the reading thread sees the cancel and ends
            with contextlib.suppress(ValueError):  # it started reading meanwhile
                self._events.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _stream(self) -> Generator[Event, None, None]:
        try:
            while True:
                error = None
                try:
                    for message in self._call:
                        yield self._received(message)
                except grpc.RpcError as broken:
                    error = broken
                if self._closed:
                    return
                time.sleep(self._backoff_or_raise(error))
                self._resubscribe(self._transport.subscribe)
        finally:
            self._cancel()


class AsyncSubscription(_Resumable):
    """An async iterator of events for the asyncio client; `await aclose()` (or
    `async with`) ends it, from any task."""

    def __init__(self, transport: AsyncTransport, request: pb.SubscribeRequest) -> None:
        super().__init__(transport.settings, request)
        self._transport = transport
        self._call = transport.subscribe(request)  # now: events from here on are ours
        self._events = self._stream()

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Event:
        self._reading = True
        try:
            return await anext(self._events)
        finally:
            self._reading = False

    async def aclose(self) -> None:
        self._cancel()
        if not self._reading:  # else the reading task sees the cancel and ends
            await self._events.aclose()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _stream(self) -> AsyncGenerator[Event, None]:
        try:
            while True:
                error = None
                try:
                    async for message in self._call:
                        yield self._received(message)
                except grpc.RpcError as broken:
                    error = broken
                except asyncio.CancelledError:
                    if self._closed and not _task_cancelled():
                        return  # our own call.cancel(), not a cancellation of the task
                    raise
                if self._closed:
                    return
                await asyncio.sleep(self._backoff_or_raise(error))
                self._resubscribe(self._transport.subscribe)
        finally:
            self._cancel()


def _task_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
