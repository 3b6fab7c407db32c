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
(or on `flush()`, `close()`, and once, briefly, at interpreter exit).
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from budgetd_client._coalesce_sync import Coalescer
from budgetd_client._core import Call, Core, not_sent, subscribe_request
from budgetd_client._credentials import PathLike, resolve
from budgetd_client._replay import EXIT_FLUSH_S, exit_flush, flush_at_exit, replay
from budgetd_client._settings import OnUnavailable, Settings
from budgetd_client._state import ClientState
from budgetd_client._transport import Transport
from budgetd_client.coalescing import Coalescing, CoalescingStats
from budgetd_client.enums import EventKind, LedgerState, Severity
from budgetd_client.errors import (
    BudgetdError,
    BudgetdUnavailable,
    ClientClosed,
    NotFound,
    Unauthenticated,
)
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


class BudgetClient(ClientState):
    """A connection to budgetd (default target: `budgetd_client.paths.default_target()`; a bare
    path is a Unix socket).

    Credentials, for a daemon's TCP listener that requires them: `token=` or
    `token_file=` (else $BUDGETD_TOKEN / $BUDGETD_TOKEN_FILE) is sent as `authorization:
    Bearer <token>` on every call; `tls_ca=` (the CA that signed the daemon's
    certificate), `tls_cert=` and `tls_key=` (a client certificate, for mTLS), or
    `tls=True` (the system's roots), else $BUDGETD_TLS_CA, ..., connect over TLS;
    `tls_server_name=` overrides the name the daemon's certificate must have. Files are
    read here: a bad one raises `CredentialsError` naming it. A token is never sent in
    plaintext beyond loopback (`CredentialsError` too).

    `coalesce=True` (or a `Coalescing`) gathers the check/reserve/commit/release/consume
    calls of concurrent threads into batches on one BatchStream, each caller still
    getting its own answer or exception (`budgetd_client.coalescing`)."""

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
        interceptors: Sequence[grpc.Interceptor] = (),
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
        self._transport = Transport(settings, interceptors)
        self._coalescer = (
            Coalescer(self._transport, settings.coalesce) if settings.coalesce else None
        )
        self._replay_lock = threading.Lock()
        self._closed = False
        self._exit_hook = functools.partial(flush_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        # Collected without close(): the hook goes too (it would find nothing anyway).
        weakref.finalize(self, atexit.unregister, self._exit_hook).atexit = False

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
        request_id: str | None = None,
    ) -> Reservation:
        """Hold `estimate` in every matching ledger; raises `BudgetExhausted` when denied.
        The handle is also a context manager that releases the hold unless committed."""
        call = self._core.reserve(labels, estimate, ttl_s, run_id, request_id)
        return Reservation(self, self._call(call))

    def commit(
        self, reservation_id: str, actual: Usage, *, request_id: str | None = None
    ) -> CommitResult:
        """Replace a hold with the actual usage (recorded even above the estimate)."""
        return self._call(self._core.commit(reservation_id, actual, request_id))

    def release(self, reservation_id: str, *, request_id: str | None = None) -> bool:
        """Drop a hold; False when the server no longer had it (expired)."""
        return self._call(self._core.release(reservation_id, request_id))

    def consume(
        self,
        labels: Mapping[str, str],
        usage: Usage,
        *,
        run_id: str = "",
        request_id: str | None = None,
    ) -> ConsumeResult:
        """Record usage that already happened (always recorded, even past a cap)."""
        return self._call(self._core.consume(labels, usage, run_id, request_id))

    def open_run(
        self,
        labels: Mapping[str, str],
        *,
        run_id: str | None = None,
        ttl_s: float | None = None,
        request_id: str | None = None,
    ) -> Run:
        """Start a run (id generated when None); raises `BudgetExhausted` when denied."""
        return self._call(self._core.open_run(labels, run_id, ttl_s, request_id))

    def heartbeat(self, run_id: str) -> HeartbeatResult:
        return self._call(self._core.heartbeat(run_id))

    def close_run(self, run_id: str, *, request_id: str | None = None) -> RunTotals:
        return self._call(self._core.close_run(run_id, request_id))

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
        resumed automatically after a reconnect, a daemon restart or a slow-subscriber
        cut-off."""
        self._check_open()
        request = subscribe_request(selector, kinds, min_severity, after_seq)
        return Subscription(self._transport, request)

    # --- buffer and lifetime -----------------------------------------------------------

    def flush(self) -> int:
        """Replay buffered usage now (even right after the daemon was found unreachable);
        returns how many records are still buffered (0 unless it is still unreachable)."""
        self._check_open()
        return self._flush()

    def close(self) -> None:
        """Flush the buffer (records that cannot be delivered are dropped, counted and
        logged), then close the channel. Idempotent; any later call raises
        `ClientClosed`."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._exit_hook)
        if self._core.pending:
            self._flush()
            self._core.buffer.drop_all("the client was closed")
            self._core.orphans.drop_all("the client was closed")
        if self._coalescer is not None:
            self._coalescer.close()
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

    @property
    def coalescing_stats(self) -> CoalescingStats | None:
        """What coalescing did so far (None: the client does not coalesce)."""
        return self._coalescer.stats() if self._coalescer is not None else None

    # --- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed(f"the BudgetClient for {self.target} is closed")

    def _call(self, call: Call[T]) -> T:
        try:
            return self._run(call)
        except BudgetdError as error:
            if error.request_id is None:
                error.request_id = call.request_id
            raise

    def _run(self, call: Call[T]) -> T:
        self._check_open()
        if call.request is None:
            return call.answer(None)
        try:
            if call.replay:
                self._replay()
        except BudgetdUnavailable as error:
            if call.fail_open is None or not self._core.fails_open:
                raise
            return call.fail_open(not_sent(error))
        try:
            response = self._send(call.method, call.request)
        except BudgetdUnavailable as error:
            if call.fail_open is None or not self._core.fails_open:
                raise
            return call.fail_open(error)
        except NotFound as error:
            instead = call.recover(error) if call.recover is not None else None
            if instead is None:
                raise
            return self._run(instead)
        return call.answer(response)

    def _send(self, method: str, request: Message) -> Any:
        """One call's RPC: in a batch when coalescing, else on its own."""
        if self._coalescer is not None and self._coalescer.carries(method):
            return self._coalescer.unary(method, request)
        return self._transport.unary(method, request)

    def _flush(self) -> int:
        try:
            self._replay(force=True)
        except (BudgetdUnavailable, Unauthenticated) as error:
            log.warning("budgetd_client: %d records stay buffered: %s", self.buffered, error)
        return self.buffered

    def _replay(self, force: bool = False) -> None:
        """Send what is owed to the daemon, oldest first, before anything newer. Raises
        `BudgetdUnavailable` (the rest stays) while the daemon is unreachable."""
        if not self._core.pending:
            return
        unary = self._transport.unary
        with self._replay_lock:
            replay(self._core, lambda method, request: unary(method, request, force=force))

    def _flush_at_exit(self) -> None:
        """See `budgetd_client._replay.flush_at_exit`."""
        if self._closed or not self._core.pending:
            return
        # A thread stuck replaying must not make the exit wait: after the bound, go on
        # without the lock (every replayed call is idempotent).
        locked = self._replay_lock.acquire(timeout=EXIT_FLUSH_S / 4)
        try:
            exit_flush(self._core, self._transport)
        finally:
            if locked:
                self._replay_lock.release()
