"""The one mutation path: every change of state goes through `Runtime.apply`.

An RPC, the expiry timer, a policy reload — each is one awaited `apply(op, args)`: stamp
the time, let the engine carry it out (synchronously: atomic with respect to every
other operation), hand the mutation record to the journal, publish its events, and in
`journal` mode return only once the record is durable. Reads (`reader`) share the
same gate: while the daemon is starting or its journal cannot write, callers get
UNAVAILABLE instead of an answer from a state that is not the real one.

Events and durability: in `journal` mode a record's events are published when the
record is durable, in lsn order, so every event a subscriber ever sees is one that
replaying the journal after a crash regenerates with the same seq. Event numbers are
assigned in apply order (`assigned_seq`), which is what a snapshot records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from budgetd.core import Engine, LimitReached
from budgetd.core import events as ev
from budgetd.core.mutations import Mutation
from budgetd.core.results import CheckResult
from budgetd.core.usage import Usage
from budgetd.errors import FailedPrecondition, Unavailable
from budgetd.event_log import EventLog
from budgetd.logs import fields
from budgetd.page_cursors import PageCursors
from budgetd.persistence import lease, snapshot
from budgetd.persistence.journal import Entry, Journal
from budgetd.persistence.statedir import StateDir
from budgetd.tuning import Collector

log = logging.getLogger("budgetd.runtime")
STARTING = "starting: state is being recovered"


class Durability(StrEnum):
    JOURNAL = "journal"  # answer after the record is fsynced: a crash loses nothing acked
    SNAPSHOT = "snapshot"  # answer at once: a crash loses up to one snapshot interval
    MEMORY = "memory"  # nothing on disk: a restart starts empty


@dataclass
class Store:
    """The state directory as the runtime writes it (absent in memory mode)."""

    state: StateDir
    journal: Journal | None  # journal mode only
    snapshot_lsn: int  # the lsn the newest snapshot covers
    lease_seq: int = 0  # snapshot mode: events may be numbered up to here


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """The link to Redis of global policies, for GetServerInfo (budgetd.scaleout)."""

    redis: str  # its URL, the password hidden
    sidecar_id: str
    reachable: bool
    redis_calls: int


class Runtime:
    """The engine, its event log and clock, and the path every mutation takes."""

    def __init__(
        self,
        engine: Engine,
        events: EventLog,
        *,
        max_streams: int = 64,
        max_batch_operations: int = 256,
        clock: Callable[[], float] = time.time,
        mode: Durability = Durability.MEMORY,
    ) -> None:
        self.engine = engine
        self.events = events
        self.max_streams = max_streams
        self.max_batch_operations = max_batch_operations
        self.clock = clock
        self.mode = mode
        self.streams = 0
        self.page_cursors = PageCursors()  # ListRuns positions a scoped caller may not see
        self.started_at = clock()
        self.listeners: list[str] = []  # set by the daemon once bound, for GetServerInfo
        self.store: Store | None = None
        self.refusing: str | None = None  # why calls get UNAVAILABLE (None: they don't)
        self.lsn = 0  # the last mutation recorded (the journal's lsn in journal mode)
        self.assigned_seq = events.last_seq  # the last event seq handed out
        self._recorded: Mutation | None = None
        self._snapshot_lock = asyncio.Lock()
        # Calls waiting for their record to be durable, and whether the drain's grace
        # has run out: then they answer UNAVAILABLE rather than being cancelled.
        self._waiting: set[asyncio.Task[Any]] = set()
        self._cut_off = False
        # Telemetry's hooks (budgetd.telemetry; None while metrics are off): every
        # mutation that counted, every Check, every snapshot's duration.
        self.on_applied: Callable[[str, Mapping[str, Any], Any, list[ev.Event]], None] | None = None
        self.on_checked: Callable[[Any, Mapping[str, str]], None] | None = None
        self.on_snapshot: Callable[[float], None] | None = None
        # The leaser's (budgetd.scaleout; None without [global]): wait briefly for a
        # round of leases, when only an empty lease stood in a call's way.
        self.lease_wait: Callable[[], Awaitable[bool]] | None = None
        self.link_status: Callable[[], LinkStatus] | None = None
        # The cyclic collector's pauses (installed by the daemon once it serves).
        self.collector = Collector()
        engine.recorder = self._record

    def install(self, engine: Engine, events: EventLog, store: Store | None, lsn: int) -> None:
        """Start serving a recovered state (the daemon, once recovery is done)."""
        self.engine, self.events, self.store, self.lsn = engine, events, store, lsn
        self.assigned_seq = events.last_seq
        engine.recorder = self._record

    def _record(self, mutation: Mutation) -> None:
        self._recorded = mutation

    # --- the path ---------------------------------------------------------------------

    def reader(self) -> Engine:
        """The engine, for a read; UNAVAILABLE while it is not the real state."""
        if self.refusing == STARTING:  # (a failing journal still lets reads through)
            raise Unavailable(STARTING)
        return self.engine

    async def apply(self, op: str, args: Mapping[str, Any]) -> Any:
        """Carry out one mutation and return its result once it counts (see the module)."""
        result, durable = self.submit(op, args)
        if durable is not None:
            await self.until_durable(durable)
        return result

    def check(self, labels: Mapping[str, str], estimate: Usage, run_id: str = "") -> CheckResult:
        """A Check: a read, but a decision telemetry counts."""
        result = self.reader().check(labels, estimate, self.clock(), run_id)
        if self.on_checked is not None:
            self.on_checked(result, labels)
        return result

    async def until_durable(self, durable: Awaitable[None]) -> None:
        """Wait until a submitted record is durable. Shielded: the batch's future is
        shared, and a caller that goes away (its deadline, a disconnect) must not cancel
        the answer of every other caller. At the end of a drain's grace the wait is cut
        (`cut_waiting`): the caller hears UNAVAILABLE, never a bare CANCELLED."""
        task = asyncio.current_task()
        if task is None:  # not in a task (cannot happen under grpc.aio): plain wait
            await asyncio.shield(durable)
            return
        self._waiting.add(task)
        try:
            await asyncio.shield(durable)
        except asyncio.CancelledError:
            if not self._cut_off:
                raise
            task.uncancel()
            raise Unavailable(
                "server draining: the record was not durable before the grace period "
                "ended; retry with the same request_id after the restart"
            ) from None
        finally:
            self._waiting.discard(task)

    def cut_waiting(self) -> int:
        """The drain's grace is over: every call still waiting for durability answers
        UNAVAILABLE now. Returns how many there were."""
        self._cut_off = True
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()
        return len(waiting)

    def submit(self, op: str, args: Mapping[str, Any]) -> tuple[Any, asyncio.Future[None] | None]:
        """`apply` without the wait: the result, and what to await before answering
        (None: nothing). A stream submits many before it awaits the first."""
        if self.refusing is not None:
            raise Unavailable(self.refusing)
        self._recorded = None
        result, events = self.engine.apply(Mutation(op, self.clock(), args))
        recorded, self._recorded = self._recorded, None
        if self.on_applied is not None:
            self.on_applied(op, args, result, events)
        store = self.store
        journal = store.journal if store is not None else None
        if journal is None:
            if recorded is not None:
                self.lsn += 1
            self.publish(events)
            return result, None
        if recorded is not None:
            self.lsn += 1
            self.assigned_seq += len(events)
            return result, journal.append(recorded, events)
        # A retry answered from memory: its original may not be durable yet.
        return result, journal.pending()

    def publish(self, events: list[ev.Event]) -> None:
        """Events of a mutation that counts (memory and snapshot modes: at once)."""
        if not events:
            return
        store = self.store
        if store is not None and store.journal is None:
            wanted = self.events.last_seq + len(events)
            if wanted > store.lease_seq:  # rare: once per LEASE_BLOCK events
                store.lease_seq = lease.extend(store.state, wanted)
        self.events.publish(events)
        self.assigned_seq = self.events.last_seq

    def published(self, batch: list[Entry]) -> None:
        """The journal made `batch` durable: its events go out, in lsn order."""
        publish = self.events.publish
        for entry in batch:
            if entry.events:
                publish(entry.events)

    # --- snapshots ------------------------------------------------------------------

    async def snapshot(
        self, *, keep_journal_back_to_previous: bool = True, starting: bool = False
    ) -> snapshot.Written:
        """Write a snapshot now (the timer, the Snapshot RPC, shutdown; `starting`: the
        start's own, while calls are refused)."""
        store = self.store
        if self.refusing == STARTING and not starting:
            raise Unavailable(STARTING)
        if store is None:
            raise FailedPrecondition("durability is 'memory': nothing is written to disk")
        if self._snapshot_lock.locked():
            raise LimitReached("snapshots_in_progress", 1, "a snapshot is being written")
        async with self._snapshot_lock:
            journal = store.journal
            # Compacting is a recorded mutation: the snapshot then holds no dead entries,
            # and a replay from an older snapshot compacts at the same point.
            refusing, self.refusing = self.refusing, None
            try:
                self.submit("compact", {})
            finally:
                self.refusing = refusing
            lsn = journal.rotate() if journal is not None else self.lsn
            began = time.perf_counter()
            try:
                # The fork happens before the first await: the state is exactly `lsn`'s.
                written = await snapshot.write_in_child(
                    store.state, self.engine, lsn, self.assigned_seq, self.clock()
                )
            except snapshot.SnapshotFailed as error:
                raise Unavailable(f"snapshot failed: {error}") from None
            if self.on_snapshot is not None:
                self.on_snapshot(time.perf_counter() - began)
            store.snapshot_lsn = lsn
            kept = await asyncio.to_thread(snapshot.prune, store.state)
            if journal is not None:
                # Back to the older kept snapshot: a damaged newest one falls back without
                # loss (the files decide, not memory: two snapshots may share an lsn).
                oldest = kept[0] if kept else lsn
                await journal.drop_through(oldest if keep_journal_back_to_previous else lsn)
        log.debug(
            "snapshot written",
            extra=fields(path=str(written.path), lsn=lsn, bytes=written.size_bytes),
        )
        return written
