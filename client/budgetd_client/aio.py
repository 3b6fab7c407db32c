"""`AsyncBudgetClient`: the asyncio SDK, the same API as `BudgetClient`, awaited.

    async with AsyncBudgetClient() as budget:
        async with budget.reserve({"agent": "a", "thread": "t1"}, Usage(2000, 500)) as r:
            await r.commit(Usage(1800, 420, model="gpt-4o"))

Retries, fail-open and the offline buffer behave exactly as in `budgetd_client.client`.
One client serves one event loop: its channel is created on first use, in that loop, and
a call from another loop raises `WrongEventLoop`.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from budgetd_client._coalesce_aio import AsyncCoalescer
from budgetd_client._core import Call, Core, not_sent, subscribe_request
from budgetd_client._credentials import PathLike, resolve
from budgetd_client._replay import exit_flush, flush_at_exit, replay_async
from budgetd_client._settings import OnUnavailable, Settings
from budgetd_client._state import ClientState
from budgetd_client._transport import AsyncTransport, Transport
from budgetd_client.coalescing import Coalescing, CoalescingStats
from budgetd_client.enums import EventKind, LedgerState, Severity
from budgetd_client.errors import BudgetdError, BudgetdUnavailable, NotFound
from budgetd_client.models import (
    CheckResult,
    CommitResult,
    ConsumeResult,
    HeartbeatResult,
    LedgerStatus,
    Run,
    RunTotals,
    Usage,
)
from budgetd_client.reservation import AsyncReservation, PendingReservation
from budgetd_client.retry import Backoff
from budgetd_client.session import AsyncRunSession
from budgetd_client.subscription import AsyncSubscription

log = logging.getLogger("budgetd_client")
T = TypeVar("T")


class AsyncBudgetClient(ClientState):
    """A connection to budgetd for asyncio code (default target, credentials and
    `coalesce=` as `BudgetClient`; coalescing gathers the calls of concurrent tasks)."""

    def __init__(
        self,
        target: str | None = None,
        *,
        on_unavailable: OnUnavailable = "deny",
        timeout_s: float = 5.0,
        retries: int = 3,
        buffer_size: int = 10_000,
        backoff: Backoff | None = None,
        resubscribe_attempts: int = 30,
        resubscribe_backoff: Backoff | None = None,
        offline_recheck_s: float = 5.0,
        coalesce: Coalescing | bool = False,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        token: str | None = None,
        token_file: PathLike | None = None,
        tls: bool | None = None,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        credentials = resolve(
            token=token,
            token_file=token_file,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_server_name=tls_server_name,
        )
        settings = Settings.of(
            target,
            on_unavailable,
            timeout_s,
            retries,
            backoff,
            resubscribe_attempts,
            resubscribe_backoff,
            offline_recheck_s,
            credentials,
            coalesce,
        )
        self._core = Core(settings, buffer_size)
        self._transport = AsyncTransport(settings, interceptors)
        self._coalescer = (
            AsyncCoalescer(self._transport, settings.coalesce) if settings.coalesce else None
        )
        self._replay_lock = asyncio.Lock()
        self._closed = False
        self._exit_hook = functools.partial(flush_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        weakref.finalize(self, atexit.unregister, self._exit_hook).atexit = False

    # --- agent calls -------------------------------------------------------------------

    async def check(
        self, labels: Mapping[str, str], estimate: Usage, run_id: str = ""
    ) -> CheckResult:
        """Would `estimate` fit? Changes nothing; a DENY is returned, not raised."""
        return await self._call(self._core.check(labels, estimate, run_id))

    def reserve(
        self,
        labels: Mapping[str, str],
        estimate: Usage,
        *,
        ttl_s: float | None = None,
        run_id: str = "",
        request_id: str | None = None,
    ) -> PendingReservation:
        """Hold `estimate`; raises `BudgetExhausted` when denied. Await it for the
        handle, or `async with` it to release the hold on exit unless committed."""

        async def start() -> AsyncReservation:
            call = self._core.reserve(labels, estimate, ttl_s, run_id, request_id)
            return AsyncReservation(self, await self._call(call))

        return PendingReservation(start)

    async def commit(
        self, reservation_id: str, actual: Usage, *, request_id: str | None = None
    ) -> CommitResult:
        """Replace a hold with the actual usage (recorded even above the estimate)."""
        return await self._call(self._core.commit(reservation_id, actual, request_id))

    async def release(self, reservation_id: str, *, request_id: str | None = None) -> bool:
        """Drop a hold; False when the server no longer had it (expired)."""
        return await self._call(self._core.release(reservation_id, request_id))

    async def consume(
        self,
        labels: Mapping[str, str],
        usage: Usage,
        *,
        run_id: str = "",
        request_id: str | None = None,
    ) -> ConsumeResult:
        """Record usage that already happened (always recorded, even past a cap)."""
        return await self._call(self._core.consume(labels, usage, run_id, request_id))

    async def open_run(
        self,
        labels: Mapping[str, str],
        *,
        run_id: str | None = None,
        ttl_s: float | None = None,
        request_id: str | None = None,
    ) -> Run:
        """Start a run (id generated when None); raises `BudgetExhausted` when denied."""
        return await self._call(self._core.open_run(labels, run_id, ttl_s, request_id))

    async def heartbeat(self, run_id: str) -> HeartbeatResult:
        return await self._call(self._core.heartbeat(run_id))

    async def close_run(self, run_id: str, *, request_id: str | None = None) -> RunTotals:
        return await self._call(self._core.close_run(run_id, request_id))

    def run(
        self,
        labels: Mapping[str, str],
        *,
        run_id: str | None = None,
        ttl_s: float = 60.0,
        heartbeat_every_s: float | None = None,
    ) -> AsyncRunSession:
        """A run as an async context manager: opened on entry, heartbeated by a task
        (every ttl/3 by default), closed on exit with its totals in `.totals`."""
        return AsyncRunSession(self, labels, run_id, ttl_s, heartbeat_every_s)

    # --- observation -------------------------------------------------------------------

    async def get_ledger(self, key: str) -> LedgerStatus:
        return await self._call(self._core.get_ledger(key))

    async def list_ledgers(
        self,
        policy: str = "",
        selector: Mapping[str, str] | None = None,
        min_state: LedgerState | None = None,
    ) -> AsyncIterator[LedgerStatus]:
        """Every matching ledger, oldest first, fetching page after page as iterated."""
        token = ""
        while True:
            call = self._core.list_page(policy, selector, min_state, token)
            ledgers, token = await self._call(call)
            for ledger in ledgers:
                yield ledger
            if not token:
                return

    def subscribe(
        self,
        selector: Mapping[str, str] | None = None,
        kinds: Iterable[EventKind] = (),
        min_severity: Severity | None = None,
        after_seq: int | None = None,
    ) -> AsyncSubscription:
        """Events as they happen (after_seq: replay retained ones after it first),
        resumed automatically after a reconnect, a daemon restart or a slow-subscriber
        cut-off. Call it inside the client's event loop."""
        self._transport.check_loop()
        request = subscribe_request(selector, kinds, min_severity, after_seq)
        return AsyncSubscription(self._transport, request)

    # --- buffer and lifetime -----------------------------------------------------------

    async def flush(self) -> int:
        """Replay buffered usage now; returns how many records are still buffered."""
        self._transport.check_loop()
        return await self._flush()

    async def close(self) -> None:
        """Flush the buffer (undeliverable records are dropped, counted and logged), then
        close the channel. Idempotent; any later call raises `ClientClosed`."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._exit_hook)
        if self._core.pending:
            await self._flush()
            self._core.buffer.drop_all("the client was closed")
            self._core.orphans.drop_all("the client was closed")
        if self._coalescer is not None:
            await self._coalescer.close()
        await self._transport.close()

    async def __aenter__(self) -> AsyncBudgetClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def coalescing_stats(self) -> CoalescingStats | None:
        """What coalescing did so far (None: the client does not coalesce)."""
        return self._coalescer.stats() if self._coalescer is not None else None

    # --- internals ---------------------------------------------------------------------

    async def _call(self, call: Call[T]) -> T:
        try:
            return await self._run(call)
        except BudgetdError as error:
            if error.request_id is None:
                error.request_id = call.request_id
            raise

    async def _run(self, call: Call[T]) -> T:
        self._transport.check_loop()  # ClientClosed, WrongEventLoop
        if call.request is None:
            return call.answer(None)
        try:
            if call.replay:
                await self._replay()
        except BudgetdUnavailable as error:
            if call.fail_open is None or not self._core.fails_open:
                raise
            return call.fail_open(not_sent(error))
        try:
            response = await self._send(call.method, call.request)
        except BudgetdUnavailable as error:
            if call.fail_open is None or not self._core.fails_open:
                raise
            return call.fail_open(error)
        except NotFound as error:
            instead = call.recover(error) if call.recover is not None else None
            if instead is None:
                raise
            return await self._run(instead)
        return call.answer(response)

    async def _send(self, method: str, request: Message) -> Any:
        """One call's RPC: in a batch when coalescing, else on its own."""
        if self._coalescer is not None and self._coalescer.carries(method):
            return await self._coalescer.unary(method, request)
        return await self._transport.unary(method, request)

    async def _flush(self) -> int:
        try:
            await self._replay(force=True)
        except BudgetdError as error:  # unreachable, or closing from another loop
            log.warning("budgetd_client: %d records stay buffered: %s", self.buffered, error)
        return self.buffered

    async def _replay(self, force: bool = False) -> None:
        """Send what is owed to the daemon first (see `BudgetClient._replay`)."""
        if not self._core.pending:
            return
        unary = self._transport.unary
        async with self._replay_lock:
            await replay_async(
                self._core, lambda method, request: unary(method, request, force=force)
            )

    def _flush_at_exit(self) -> None:
        """At exit the event loop is usually gone: deliver over a blocking channel of its
        own (without the client's asyncio interceptors). See `_replay.flush_at_exit`."""
        if self._closed or not self._core.pending:
            return
        transport = Transport(self._core.settings)
        try:
            exit_flush(self._core, transport)
        finally:
            transport.close()
