"""The channel, the stubs and the retry loop, for the sync and the asyncio client.

A unary call is tried once, then retried after a backoff while it fails with a retryable
status (see `budgetd_client.retry`), at most `retries` times. The request object, and so
its `request_id`, is the same on every attempt. What is finally raised is typed
(`budgetd_client.errors`), with the `grpc.RpcError` as its cause.

With `on_unavailable="allow"` a circuit breaker (`budgetd_client._breaker`) stands in
front of the retry loop: right after a call found the daemon unreachable, calls are not
sent at all (`BudgetdUnavailable` with `attempts == 0`) until a probe gets an answer.
`force=True` (an explicit `flush()`) goes past it.

Every call, streams included, carries the client's call metadata (`authorization:
Bearer <token>` when it has a token). UNAUTHENTICATED and PERMISSION_DENIED are answers,
not failures to reach the daemon: raised at once (`Unauthenticated`, `PermissionDenied`),
never retried, and they never open the breaker or make the client fail open.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf.message import Message

from budgetd_client._breaker import Breaker, Gate
from budgetd_client._credentials import open_aio_channel, open_channel
from budgetd_client._settings import Settings
from budgetd_client.errors import (
    BudgetdError,
    BudgetdUnavailable,
    ClientClosed,
    WrongEventLoop,
    from_rpc_error,
)
from budgetd_client.retry import RETRYABLE
from budgetd_client.v1 import budget_pb2 as pb
from budgetd_client.v1 import budget_pb2_grpc as rpc


class _Attempts:
    """The retry plan of one call, and what its outcome tells the breaker."""

    def __init__(
        self, settings: Settings, breaker: Breaker, force: bool, retries: int | None
    ) -> None:
        self.settings = settings
        self.breaker = breaker
        self.retries = settings.retries if retries is None else retries
        self.gate = Gate.closed if force else breaker.gate()
        if self.gate is Gate.open:
            raise BudgetdUnavailable(
                f"budgetd at {settings.target} was unreachable less than"
                f" {settings.offline_recheck_s:g} s ago; not sent",
                grpc.StatusCode.UNAVAILABLE,
                attempts=0,
            )
        if self.gate is Gate.probe:
            self.retries = 0
        self.attempt = 0
        self._settled = False

    def answered(self) -> None:
        self._settled = True
        self.breaker.answered()

    def failed(self, error: grpc.RpcError) -> BudgetdError | None:
        """The error to raise, or None to retry after `delay()`."""
        if error.code() in RETRYABLE and self.attempt < self.retries:
            return None
        typed = from_rpc_error(error, self.settings.target, self.attempt + 1)
        self._settled = True
        if isinstance(typed, BudgetdUnavailable):
            self.breaker.unreachable()
        else:
            self.breaker.answered()
        return typed

    def delay(self) -> float:
        delay = self.settings.backoff.delay(self.attempt)
        self.attempt += 1
        return delay

    def handed_over(self) -> None:
        """The call went on as a unary call of its own, which tells the breaker itself."""
        self._settled = True

    def abandoned(self) -> None:
        """Ended by something else (cancelled, interrupted): a probe must not stay taken."""
        if not self._settled and self.gate is Gate.probe:
            self.breaker.unreachable()


class Transport:
    """Blocking calls over one channel, TLS or plaintext (thread-safe, like the channel).

    No call is ever started on a closed channel (grpc raises ValueError for that, or
    crashes the process when the channel has interceptors): `close()` waits for nothing,
    but when attempts are in flight (a heartbeat thread left behind against a hung
    daemon) the channel is closed by the last of them, at most one deadline later.
    """

    def __init__(self, settings: Settings, interceptors: Sequence[grpc.Interceptor] = ()) -> None:
        self.settings = settings
        self.breaker = Breaker(settings.offline_recheck_s if settings.fails_open else 0)
        self.closed = False
        self._in_flight = 0
        self._lock = threading.Lock()
        self._metadata = settings.credentials.metadata
        channel = open_channel(
            settings.target, settings.credentials, options=settings.channel_options
        )
        self._channel = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        self._stub = rpc.BudgetServiceStub(self._channel)

    @contextmanager
    def _attempt(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.let_go()

    def hold(self) -> None:
        """Keep the channel open until `let_go()` (ClientClosed once closed)."""
        with self._lock:
            if self.closed:
                raise ClientClosed("the client is closed")
            self._in_flight += 1

    def let_go(self) -> None:
        with self._lock:
            self._in_flight -= 1
            last = self.closed and self._in_flight == 0
        if last:
            self._channel.close()

    def unary(
        self,
        method: str,
        request: Message,
        *,
        force: bool = False,
        timeout_s: float | None = None,
        retries: int | None = None,
        wait_for_ready: bool | None = None,
    ) -> Any:
        if self.closed:
            raise ClientClosed("the client is closed")
        invoke = getattr(self._stub, method)
        plan = _Attempts(self.settings, self.breaker, force, retries)
        try:
            while True:
                try:
                    with self._attempt():
                        response = invoke(
                            request,
                            timeout=timeout_s or self.settings.timeout_s,
                            metadata=self._metadata,
                            wait_for_ready=wait_for_ready,
                        )
                except grpc.RpcError as error:
                    typed = plan.failed(error)
                    if typed is not None:
                        raise typed from error
                else:
                    plan.answered()
                    return response
                time.sleep(plan.delay())
        finally:
            plan.abandoned()

    def subscribe(self, request: pb.SubscribeRequest) -> Any:
        """The stream call (no deadline: it lives as long as the subscriber wants)."""
        with self._lock:  # starting a stream does not block: under the lock
            if self.closed:
                raise ClientClosed("the client is closed")
            return self._stub.Subscribe(request, metadata=self._metadata)

    def batch_stream(self, requests: Iterator[pb.BatchStreamRequest]) -> Any:
        """A BatchStream call fed by `requests` (no deadline: it lives as long as the
        client coalesces). The caller holds the channel (`hold()`) while it runs."""
        return self._stub.BatchStream(requests, metadata=self._metadata)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            idle = self._in_flight == 0
        if idle:
            self._channel.close()


class AsyncTransport:
    """Awaitable calls over one grpc.aio channel, TLS or plaintext.

    A grpc.aio channel belongs to the event loop it is created in, so it is created on
    first use, inside the caller's loop, and that loop is the only one it serves.
    """

    def __init__(
        self, settings: Settings, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
    ) -> None:
        self.settings = settings
        self.breaker = Breaker(settings.offline_recheck_s if settings.fails_open else 0)
        self.closed = False
        self._interceptors = list(interceptors)
        self._metadata = settings.credentials.metadata
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stub: Any = None

    def check_loop(self) -> None:
        """Raise `ClientClosed` or `WrongEventLoop` instead of misusing the channel."""
        if self.closed:
            raise ClientClosed("the client is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            raise WrongEventLoop(
                "this AsyncBudgetClient belongs to the event loop it was first used in;"
                " use one client per event loop"
            )

    @property
    def stub(self) -> Any:
        self.check_loop()
        if self._channel is None:
            self._loop = asyncio.get_running_loop()
            self._channel = open_aio_channel(
                self.settings.target,
                self.settings.credentials,
                options=self.settings.channel_options,
                interceptors=self._interceptors or None,
            )
            self._stub = rpc.BudgetServiceStub(self._channel)
        return self._stub

    async def unary(
        self,
        method: str,
        request: Message,
        *,
        force: bool = False,
        timeout_s: float | None = None,
        retries: int | None = None,
        wait_for_ready: bool | None = None,
    ) -> Any:
        plan = _Attempts(self.settings, self.breaker, force, retries)
        try:
            while True:
                invoke = getattr(self.stub, method)  # ClientClosed once closed, between tries
                try:
                    response = await invoke(
                        request,
                        timeout=timeout_s or self.settings.timeout_s,
                        metadata=self._metadata,
                        wait_for_ready=wait_for_ready,
                    )
                except grpc.RpcError as error:
                    typed = plan.failed(error)
                    if typed is not None:
                        raise typed from error
                else:
                    plan.answered()
                    return response
                await asyncio.sleep(plan.delay())
        finally:
            plan.abandoned()

    def subscribe(self, request: pb.SubscribeRequest) -> Any:
        return self.stub.Subscribe(request, metadata=self._metadata)

    def batch_stream(self) -> Any:
        """A BatchStream call to write to and read from (no deadline, see `Transport`)."""
        return self.stub.BatchStream(metadata=self._metadata)

    async def close(self) -> None:
        """Close the channel; from another loop than its own (or once that loop is gone)
        the channel cannot be awaited and is only dropped."""
        self.closed = True
        channel, self._channel = self._channel, None
        if channel is not None and asyncio.get_running_loop() is self._loop:
            await channel.close(grace=None)
