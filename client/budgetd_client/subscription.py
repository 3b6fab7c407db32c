"""Event subscriptions that survive reconnects and daemon restarts.

The server ends a stream with UNAVAILABLE when it stops or drains, and with
RESOURCE_EXHAUSTED when the subscriber fell too far behind (or too many subscribe at
once). Either way nothing is skipped silently: the subscription waits
(`resubscribe_backoff`), subscribes again with `after_seq` = the last seq it delivered,
and the server sends what came after, or a `Gap` event first if it no longer retains it
(or, after a restart, never had it: the Gap then marks the jump back to the new daemon's
first seq).

Before the first event, the resume point is the one the server names in the
`budgetd-resume-after` response header: a stream lost early resumes from where it
started, not "from now". Resubscribing has its own budget, `resubscribe_attempts`
consecutive failures (25 to 50 s of waiting with the default backoff), separate from the
unary `retries`; it starts again from zero each time a (re)subscription is accepted
(its response headers arrive). Past it, or on any other status, the error is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import Any

import grpc

from budgetd_client import _event_wire
from budgetd_client._settings import Settings
from budgetd_client._transport import AsyncTransport, Transport
from budgetd_client.errors import BudgetdUnavailable, ClientClosed, from_rpc_error
from budgetd_client.events import Event
from budgetd_client.retry import RESUMABLE
from budgetd_client.v1 import budget_pb2 as pb

RESUME_HEADER = "budgetd-resume-after"
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

    def _started(self, metadata: Any) -> None:
        """The (re)subscription was accepted: its headers name where it starts."""
        value = dict(metadata or ()).get(RESUME_HEADER)
        if value is None:
            return  # the call failed before its headers (or an older daemon)
        self._failures = 0
        if self.last_seq is None:
            # Keep a resume point of our own otherwise: one beyond a restarted daemon's
            # newest seq must be sent again, for the Gap that marks the jump back.
            self.last_seq = int(value)

    def _received(self, message: pb.SubscribeResponse) -> Event:
        event = _event_wire.event(message.event)
        self.last_seq = event.seq
        self._failures = 0
        return event

    def _backoff_or_raise(self, error: grpc.RpcError | None, closed: bool) -> float:
        """After a broken stream (`error` None: ended normally): the wait before
        resubscribing, or the typed error when it is not resumable or too many failed."""
        if closed:
            raise ClientClosed("the client of this subscription was closed")
        code = grpc.StatusCode.UNAVAILABLE if error is None else error.code()
        if code not in RESUMABLE or self._failures >= self.settings.resubscribe_attempts:
            if error is None:
                raise BudgetdUnavailable(_ENDED, code, self._failures + 1)
            raise from_rpc_error(error, self.settings.target, self._failures + 1) from error
        delay = self.settings.resubscribe_backoff.delay(self._failures)
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
        self._wake = threading.Event()  # ends a backoff wait early on close()
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
        self._wake.set()
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
                    self._started(self._call.initial_metadata())
                    for message in self._call:
                        yield self._received(message)
                except grpc.RpcError as broken:
                    error = broken
                if self._closed:
                    return
                self._wake.wait(self._backoff_or_raise(error, self._transport.closed))
                if self._closed:
                    return
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
                    self._started(await self._call.initial_metadata())
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
                await asyncio.sleep(self._backoff_or_raise(error, self._transport.closed))
                if self._closed:
                    return
                self._resubscribe(self._transport.subscribe)
        finally:
            self._cancel()


def _task_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
