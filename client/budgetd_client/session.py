"""Run sessions: `with client.run(labels) as run:` opens a run, keeps it alive, closes it.

An agent's task is a run: it holds a concurrency slot and ends by itself if heartbeats
stop (a crashed agent does not leak its slot). The session heartbeats in the background
(a daemon thread for the sync client, a task for asyncio), by default every ttl/3 so two
beats can be lost before the run expires. A failed heartbeat is logged and retried on
the next beat: it must never crash the agent. Heartbeats never replay the offline buffer
(the agent's own next call does). On exit the run is closed and its final figures are in
`run.totals`.

A session never crashes the agent because the daemon lost track of its run:

- An offline run (daemon unreachable, `on_unavailable="allow"`) exists only in the
  client: its id is never sent, `run.reserve()` / `run.consume()` go without a run_id,
  nothing is heartbeated or closed, and `totals` stays None.
- A run the daemon forgot (NOT_FOUND, e.g. after a daemon restart, or after the run
  expired): `run.reserve()` / `run.consume()` fall back to the call without run_id (logged
  once), and closing it is logged and treated as closed, `totals` None.

Leaving the block is bounded: the heartbeat thread is waited for at most `timeout_s`
(it is a daemon thread and ends on its own), then CloseRun takes at most
(retries + 1) x timeout_s plus backoff waits, or nothing when the client fails open and
found the daemon unreachable in the last `offline_recheck_s`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from budgetd_client.errors import BudgetdError, BudgetdUnavailable, ClientClosed, NotFound
from budgetd_client.models import ConsumeResult, HeartbeatResult, Run, RunTotals, Usage

if TYPE_CHECKING:
    from budgetd_client.aio import AsyncBudgetClient
    from budgetd_client.client import BudgetClient
    from budgetd_client.reservation import PendingReservation, Reservation

log = logging.getLogger("budgetd_client")


class _Session:
    """State shared by both sessions."""

    def __init__(
        self,
        labels: Mapping[str, str],
        run_id: str | None,
        ttl_s: float,
        heartbeat_every_s: float | None,
    ) -> None:
        if ttl_s <= 0 or (heartbeat_every_s is not None and heartbeat_every_s <= 0):
            raise ValueError("ttl_s and heartbeat_every_s must be > 0")
        self.labels = dict(labels)
        self.ttl_s = ttl_s
        self.heartbeat_every_s = heartbeat_every_s or ttl_s / 3
        self._run_id = run_id
        self.opened: Run | None = None
        self.totals: RunTotals | None = None
        self.heartbeats = 0
        self.expires_at: datetime | None = None
        self._stopping = False

    @property
    def id(self) -> str:
        if self.opened is None:
            raise BudgetdError("the run is not open yet: use the session in a with block")
        return self.opened.run_id

    @property
    def offline(self) -> bool:
        return self.opened is not None and self.opened.offline

    def _opened(self, run: Run) -> None:
        self.opened = run
        self.expires_at = run.expires_at

    def _beat_done(self, result: HeartbeatResult) -> None:
        self.heartbeats += 1
        self.expires_at = result.expires_at

    def _beat_failed(self, error: Exception) -> bool:
        """Log a failed heartbeat; True when it is worth trying again."""
        if self._stopping or isinstance(error, ClientClosed):
            return False  # the block is being left (or the client closed): nothing to do
        if isinstance(error, NotFound):
            log.error("budgetd_client: run %s is gone, heartbeats stop: %s", self.id, error)
            return False
        log.warning("budgetd_client: heartbeat of run %s failed, will retry: %s", self.id, error)
        return True

    def _close_failed(self, error: BudgetdError, fails_open: bool, exiting_on_error: bool) -> None:
        """A failed close is logged rather than raised when the daemon does not know the
        run (it is over either way), when the block already failed (its exception
        matters more), or when the client fails open and the daemon is gone."""
        if isinstance(error, NotFound):
            log.warning(
                "budgetd_client: the daemon does not know run %s (restarted, or the run"
                " expired); treated as closed, totals unknown: %s",
                self.id,
                error,
            )
            return
        if exiting_on_error or (fails_open and isinstance(error, BudgetdUnavailable)):
            log.warning("budgetd_client: closing run %s failed: %s", self.id, error)
            return
        raise error


class RunSession(_Session):
    """A run of the sync client, heartbeated by a daemon thread."""

    def __init__(
        self,
        client: BudgetClient,
        labels: Mapping[str, str],
        run_id: str | None,
        ttl_s: float,
        heartbeat_every_s: float | None,
    ) -> None:
        super().__init__(labels, run_id, ttl_s, heartbeat_every_s)
        self._client = client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def consume(self, usage: Usage, *, request_id: str | None = None) -> ConsumeResult:
        """Record usage of this run (its labels, its run_id)."""
        return self._client.consume(self.labels, usage, run_id=self.id, request_id=request_id)

    def reserve(
        self, estimate: Usage, ttl_s: float | None = None, *, request_id: str | None = None
    ) -> Reservation:
        """Reserve for a model call of this run (its labels, its run_id)."""
        return self._client.reserve(
            self.labels, estimate, ttl_s=ttl_s, run_id=self.id, request_id=request_id
        )

    def __enter__(self) -> RunSession:
        self._opened(self._client.open_run(self.labels, run_id=self._run_id, ttl_s=self.ttl_s))
        if not self.offline:
            self._thread = threading.Thread(
                target=self._beat, name=f"budgetd-heartbeat-{self.id}", daemon=True
            )
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every_s):
            try:
                self._beat_done(self._client.heartbeat(self.id))
            except Exception as error:
                if not self._beat_failed(error):
                    return

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        self._stop.set()
        if self._thread is not None:
            # A beat in flight against a hung daemon must not hold the agent: after one
            # call's deadline, go on (the daemon thread ends when its call does).
            self._thread.join(timeout=self._client.timeout_s)
        if self.opened is None or self.offline:
            return
        try:
            self.totals = self._client.close_run(self.id)
        except BudgetdError as error:
            self._close_failed(error, self._client.on_unavailable == "allow", exc is not None)


class AsyncRunSession(_Session):
    """A run of the asyncio client, heartbeated by a task."""

    def __init__(
        self,
        client: AsyncBudgetClient,
        labels: Mapping[str, str],
        run_id: str | None,
        ttl_s: float,
        heartbeat_every_s: float | None,
    ) -> None:
        super().__init__(labels, run_id, ttl_s, heartbeat_every_s)
        self._client = client
        self._task: asyncio.Task[None] | None = None

    async def consume(self, usage: Usage, *, request_id: str | None = None) -> ConsumeResult:
        """Record usage of this run (its labels, its run_id)."""
        return await self._client.consume(self.labels, usage, run_id=self.id, request_id=request_id)

    def reserve(
        self, estimate: Usage, ttl_s: float | None = None, *, request_id: str | None = None
    ) -> PendingReservation:
        """Reserve for a model call of this run (its labels, its run_id)."""
        return self._client.reserve(
            self.labels, estimate, ttl_s=ttl_s, run_id=self.id, request_id=request_id
        )

    async def __aenter__(self) -> AsyncRunSession:
        run = await self._client.open_run(self.labels, run_id=self._run_id, ttl_s=self.ttl_s)
        self._opened(run)
        if not self.offline:
            self._task = asyncio.create_task(self._beat(), name=f"budgetd-heartbeat-{self.id}")
        return self

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_every_s)
            try:
                self._beat_done(await self._client.heartbeat(self.id))
            except Exception as error:
                if not self._beat_failed(error):
                    return

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # unlike `await task`, keeps our own cancellation
        if self.opened is None or self.offline:
            return
        try:
            self.totals = await self._client.close_run(self.id)
        except BudgetdError as error:
            self._close_failed(error, self._client.on_unavailable == "allow", exc is not None)
