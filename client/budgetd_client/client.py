"""`BudgetClient`: the blocking SDK, safe to share between threads.

    with BudgetClient() as budget:
        with budget.reserve({"agent": "a", "thread": "t1"}, Usage(2000, 500)) as r:
            r.commit(Usage(1800, 420, model="gpt-4o"))

Every call has a deadline (`timeout_s`) and is retried on UNAVAILABLE and
DEADLINE_EXCEEDED (`retries` times, with capped, jittered exponential backoff) reusing
its one request_id, so a retry never counts twice. When the daemon stays unreachable,
`on_unavailable` decides: "deny" raises `BudgetdUnavailable`; "allow" answers check,
reserve and open_run with an ALLOW marked `offline=True`, and keeps consumed usage in a
bounded buffer that is replayed, in order, before the next call that reaches the daemon
(or on `flush()`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import grpc

from budgetd.paths import default_target
from budgetd_client._core import (
    Call,
    Core,
    OnUnavailable,
    Settings,
    release_request,
    subscribe_request,
)
from budgetd_client._transport import Transport
from budgetd_client.buffer import Record
from budgetd_client.enums import EventKind, LedgerState, Severity
from budgetd_client.errors import BudgetdError, BudgetdUnavailable
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
from budgetd_client.reservation import Reservation
from budgetd_client.retry import Backoff
from budgetd_client.session import RunSession
from budgetd_client.subscription import Subscription

log = logging.getLogger("budgetd_client")
T = TypeVar("T")


class BudgetClient:
    """A connection to budgetd (default target: `budgetd.paths.default_target()`)."""

    def __init__(
        self,
        target: str | None = None,
        *,
        on_unavailable: OnUnavailable = "deny",
        timeout_s: float = 5.0,
        retries: int = 3,
        buffer_size: int = 10_000,
        backoff: Backoff | None = None,
        interceptors: Sequence[grpc.Interceptor] = (),
    ) -> None:
        settings = Settings(
            target or default_target(),
            on_unavailable=on_unavailable,
            timeout_s=timeout_s,
            retries=retries,
            backoff=backoff or Backoff(),
        )
        self._core = Core(settings, buffer_size)
        self._transport = Transport(settings, interceptors)
        self._replay_lock = threading.Lock()
        self._closed = False

    # --- state -------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return self._core.settings.target

    @property
    def on_unavailable(self) -> OnUnavailable:
        return self._core.settings.on_unavailable

    @property
    def buffered(self) -> int:
        """Usage records waiting for the daemon."""
        return len(self._core.buffer)

    @property
    def dropped_records(self) -> int:
        """Usage records lost: pushed out of a full buffer, rejected by the server on
        replay, or still buffered at `close()`. Each was logged as a warning."""
        return self._core.buffer.dropped

    # --- agent calls -------------------------------------------------------------------

    def check(self, labels: Mapping[str, str], estimate: Usage, run_id: str = "") -> CheckResult:
        """Would `estimate` fit? Changes nothing; a DENY is returned, not raised."""
        return self._call(self._core.check(labels, estimate, run_id))

    def reserve(
        self,
        labels: Mapping[str, str],
        estimate: Usage,
        *,
        ttl_s: float | None = None,
        run_id: str = "",
    ) -> Reservation:
        """Hold `estimate` in every matching ledger; raises `BudgetExhausted` when denied.
        The handle is also a context manager that releases the hold unless committed."""
        return Reservation(self, self._call(self._core.reserve(labels, estimate, ttl_s, run_id)))

    def commit(self, reservation_id: str, actual: Usage) -> CommitResult:
        """Replace a hold with the actual usage (recorded even above the estimate)."""
        return self._call(self._core.commit(reservation_id, actual))

    def release(self, reservation_id: str) -> bool:
        """Drop a hold; False when the server no longer had it (expired)."""
        return self._call(self._core.release(reservation_id))

    def consume(
        self, labels: Mapping[str, str], usage: Usage, *, run_id: str = ""
    ) -> ConsumeResult:
        """Record usage that already happened (always recorded, even past a cap)."""
        return self._call(self._core.consume(labels, usage, run_id))

    def open_run(
        self, labels: Mapping[str, str], *, run_id: str | None = None, ttl_s: float | None = None
    ) -> Run:
        """Start a run (id generated when None); raises `BudgetExhausted` when denied."""
        return self._call(self._core.open_run(labels, run_id, ttl_s))

    def heartbeat(self, run_id: str) -> HeartbeatResult:
        return self._call(self._core.heartbeat(run_id))

    def close_run(self, run_id: str) -> RunTotals:
        return self._call(self._core.close_run(run_id))

    def run(
        self,
        labels: Mapping[str, str],
        *,
        run_id: str | None = None,
        ttl_s: float = 60.0,
        heartbeat_every_s: float | None = None,
    ) -> RunSession:
        """A run as a context manager: opened on entry, heartbeated in a background thread
        (every ttl/3 by default), closed on exit with its totals in `.totals`."""
        return RunSession(self, labels, run_id, ttl_s, heartbeat_every_s)

    # --- observation -------------------------------------------------------------------

    def get_ledger(self, key: str) -> LedgerStatus:
        return self._call(self._core.get_ledger(key))

    def list_ledgers(
        self,
        policy: str = "",
        selector: Mapping[str, str] | None = None,
        min_state: LedgerState | None = None,
    ) -> Iterator[LedgerStatus]:
        """Every matching ledger, oldest first, fetching page after page as iterated."""
        token = ""
        while True:
            ledgers, token = self._call(self._core.list_page(policy, selector, min_state, token))
            yield from ledgers
            if not token:
                return

    def subscribe(
        self,
        selector: Mapping[str, str] | None = None,
        kinds: Iterable[EventKind] = (),
        min_severity: Severity | None = None,
        after_seq: int | None = None,
    ) -> Subscription:
        """Events as they happen (after_seq: replay retained ones after it first),
        resumed automatically after a reconnect or a slow-subscriber cut-off."""
        request = subscribe_request(selector, kinds, min_severity, after_seq)
        return Subscription(self._transport, request)

    # --- buffer and lifetime -----------------------------------------------------------

    def flush(self) -> int:
        """Replay buffered usage now; returns how many records are still buffered (0
        unless the daemon is still unreachable)."""
        try:
            self._replay()
        except BudgetdUnavailable as error:
            log.warning("budgetd_client: %d records stay buffered: %s", self.buffered, error)
        return self.buffered

    def close(self) -> None:
        """Flush the buffer (records that cannot be delivered are dropped, counted and
        logged), then close the channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.buffered:
            self.flush()
            self._core.buffer.drop_all("the client was closed")
        self._transport.close()

    def __enter__(self) -> BudgetClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------

    def _call(self, call: Call[T]) -> T:
        if call.request is None:
            return call.answer(None)
        try:
            self._replay()
            response = self._transport.unary(call.method, call.request)
        except BudgetdUnavailable:
            if call.fail_open is None or not self._core.fails_open:
                raise
            return call.fail_open()
        return call.answer(response)

    def _replay(self) -> None:
        """Send buffered usage, oldest first, before anything newer. Raises
        `BudgetdUnavailable` (the rest stays buffered) while the daemon is unreachable."""
        if not self.buffered:
            return
        with self._replay_lock:
            while (record := self._core.buffer.head()) is not None:
                self._core.buffer.settle(record, self._deliver(record))

    def _deliver(self, record: Record) -> BudgetdError | None:
        try:
            self._transport.unary("Consume", record.request)
        except BudgetdUnavailable:
            raise
        except BudgetdError as error:
            return error
        if record.release_id:
            try:
                self._transport.unary("Release", release_request(record))
            except BudgetdError as error:  # best effort: the hold ends at its ttl anyway
                log.info("budgetd_client: release of %s failed: %s", record.release_id, error)
        return None
