"""The journal: every acknowledged mutation, appended and fsynced before its answer.

Appending is synchronous and cheap (a list append on the event loop); one writer task
takes everything appended meanwhile, encodes and writes it in one thread call, fsyncs
once and then resolves one future for the whole batch (group commit: the fsync of one
batch is the gathering time of the next; `commit_delay_s` can add a bounded wait).

Records carry a log sequence number (lsn), consecutive from 1 over the life of the state
directory. Segments are named by their first lsn; a new one starts after a snapshot
(`rotate`), when one grows past `segment_bytes`, and after a write error. Segments a
snapshot covers are deleted (`drop_through`).

A failed write or fsync never acknowledges: the batch's callers get `JournalUnavailable`,
the journal turns unhealthy (the runtime refuses new mutations), the damaged segment is
cut back to its last good frame and abandoned, and the records are retried, with
backoff, into a fresh segment until a write succeeds. Recovery skips an lsn it has
already applied, so a record that reached the disk twice is applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from budgetd.core import events as ev
from budgetd.core.mutations import Mutation, encode
from budgetd.errors import Unavailable
from budgetd.logs import fields
from budgetd.persistence.frames import frame
from budgetd.persistence.statedir import StateDir, fsync_directory

log = logging.getLogger("budgetd.journal")

SEGMENT_BYTES = 64 << 20
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0


class JournalUnavailable(Unavailable):
    """The mutation could not be made durable; nothing was acknowledged."""


@dataclass(slots=True)
class Entry:
    lsn: int
    mutation: Mutation
    events: list[ev.Event]


@dataclass(slots=True)
class JournalStats:
    records: int = 0
    fsyncs: int = 0
    fsync_seconds: float = 0.0
    failures: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # the last few, for the bench


def encode_entry(entry: Entry) -> bytes:
    record = encode(entry.mutation)
    record["lsn"] = entry.lsn
    return frame(json.dumps(record, separators=(",", ":")).encode())


class Journal:
    def __init__(
        self,
        state: StateDir,
        next_lsn: int,
        on_durable: Callable[[list[Entry]], None],
        on_health: Callable[[str | None], None],
        *,
        commit_delay_s: float = 0.0,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.state = state
        self.last_lsn = next_lsn - 1  # appended (applied in memory)
        self.durable_lsn = next_lsn - 1  # written and fsynced
        self.error: str | None = None  # set while writes fail
        self.stats = JournalStats()
        self.commit_delay_s = commit_delay_s
        self.segment_bytes = segment_bytes
        self._on_durable = on_durable
        self._on_health = on_health
        self._pending: list[Entry] = []
        self._future: asyncio.Future[None] | None = None
        self._inflight: asyncio.Future[None] | None = None  # the batch being written
        self._wake = asyncio.Event()
        self._closing = False
        # One thread: writes, fsyncs, segment changes and deletions happen in order.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="budgetd-journal")
        self._fd: int | None = None
        self._segment_first = 0
        self._segment_end = 0  # bytes known good in the open segment
        self._rotate_from = 0  # start a new segment at this lsn (0: no request)
        self._written_lsn = next_lsn - 1  # the writer thread's own view of durable_lsn
        self._task: asyncio.Task[None] | None = None
        # Told each fsync's seconds and records, on the writer thread (telemetry).
        self.on_fsync: Callable[[float, int], None] | None = None

    # --- the event loop's side --------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="budgetd-journal")

    def append(self, mutation: Mutation, events: list[ev.Event]) -> asyncio.Future[None]:
        """Queue one record; the future resolves once it is durable."""
        self.last_lsn += 1
        self._pending.append(Entry(self.last_lsn, mutation, events))
        future = self._future
        if future is None:
            future = self._future = asyncio.get_running_loop().create_future()
            self._wake.set()
        return future

    def pending(self) -> asyncio.Future[None] | None:
        """The future of what is appended but not yet durable (None: nothing is): the
        batch still gathering, else the one being written."""
        return self._future or self._inflight

    def rotate(self) -> int:
        """Records after the returned lsn go to a new segment (a snapshot covers the rest)."""
        self._rotate_from = self.last_lsn + 1
        return self.last_lsn

    async def drop_through(self, lsn: int) -> None:
        """Delete every segment whose records are all <= `lsn` (a snapshot covers them)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._drop, lsn)

    async def close(self) -> None:
        """Write everything appended, then stop the writer. A journal that cannot
        write stops retrying: what it holds was never acknowledged."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            if self.error is not None:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_segment)
        self._executor.shutdown()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.commit_delay_s and not self._closing:
                await asyncio.sleep(self.commit_delay_s)
            batch, future = self._pending, self._future
            self._pending, self._future, self._inflight = [], None, future
            try:
                await loop.run_in_executor(self._executor, self._write, batch)
            except Exception as error:
                await self._retry(loop, batch, future, error)
                continue
            finally:
                self._inflight = None
            self._durable(batch)
            if future is not None and not future.done():
                future.set_result(None)

    def _durable(self, batch: list[Entry]) -> None:
        self.durable_lsn = batch[-1].lsn
        self._on_durable(batch)

    async def _retry(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[Entry],
        future: asyncio.Future[None] | None,
        error: Exception,
    ) -> None:
        """Fail the callers, refuse new mutations, and write `batch` (and whatever was
        appended before the refusal began) until the disk takes it."""
        reason = f"journal write failed: {_describe(error)}"
        self.error = reason
        self.stats.failures += 1
        log.error("journal unavailable; refusing mutations", extra=fields(reason=reason))
        self._on_health(reason)
        unwritten = batch
        delay = RETRY_FIRST_S
        while True:
            for waiting in (future, self._future):
                if waiting is not None and not waiting.done():
                    waiting.set_exception(JournalUnavailable(reason))
            unwritten, self._pending, future, self._future = (
                unwritten + self._pending,
                [],
                None,
                None,
            )
            if self._closing:  # stopping: what is unwritten was never acknowledged
                log.error(
                    "journal closed with unwritten records", extra=fields(records=len(unwritten))
                )
                self._pending = []
                return
            await asyncio.sleep(delay)
            try:
                await loop.run_in_executor(self._executor, self._write, unwritten)
            except Exception as again:
                self.stats.failures += 1
                delay = min(delay * 2, RETRY_MAX_S)
                if _describe(again) != _describe(error):
                    error = again
                    log.error("journal still failing", extra=fields(reason=_describe(again)))
                continue
            break
        self._durable(unwritten)
        self.error = None
        log.warning(
            "journal writable again; accepting mutations", extra=fields(lsn=self.durable_lsn)
        )
        self._on_health(None)

    # --- the writer thread's side -----------------------------------------------------

    def _write(self, batch: list[Entry]) -> None:
        try:
            self._write_batch(batch)
        except BaseException:
            self._abandon_segment()
            raise

    def _write_batch(self, batch: list[Entry]) -> None:
        chunk: list[bytes] = []
        for entry in batch:
            if self._fd is None or self._new_segment_due(entry.lsn):
                self._flush(chunk)
                chunk = []
                self._open_segment(entry.lsn)
            chunk.append(encode_entry(entry))
        self._flush(chunk)
        self._written_lsn = batch[-1].lsn
        self.stats.records += len(batch)
        sizes = self.stats.batch_sizes
        sizes.append(len(batch))
        if len(sizes) > 4096:
            del sizes[:2048]

    def _new_segment_due(self, lsn: int) -> bool:
        rotate = self._rotate_from
        if rotate and self._segment_first < rotate <= lsn:
            return True
        return self._segment_end >= self.segment_bytes

    def _flush(self, chunk: list[bytes]) -> None:
        if not chunk or self._fd is None:
            return
        data = b"".join(chunk)
        view = memoryview(data)
        offset = self._segment_end
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        started = time.perf_counter()
        os.fsync(self._fd)
        seconds = time.perf_counter() - started
        self.stats.fsync_seconds += seconds
        self.stats.fsyncs += 1
        self._segment_end = offset
        if self.on_fsync is not None:
            self.on_fsync(seconds, len(chunk))

    def _open_segment(self, first_lsn: int) -> None:
        self._close_segment()
        path = self.state.journal_path(first_lsn)
        # O_TRUNC: a segment of this name can only hold records that were never
        # acknowledged (a write of its first batch failed), now written again.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._segment_first = first_lsn
        self._segment_end = 0
        fsync_directory(self.state.path)

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _abandon_segment(self) -> None:
        """After a failed write: cut the segment back to its last good frame (best
        effort; recovery would cut a torn tail anyway) and start the next write afresh."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._segment_end)
            os.fsync(self._fd)
        except OSError:
            pass
        self._close_segment()

    def _drop(self, lsn: int) -> None:
        segments = self.state.journals()
        dropped = False
        for index, (first, path) in enumerate(segments):
            if first > lsn:
                break
            is_open = self._fd is not None and first == self._segment_first
            last = self._written_lsn if index + 1 == len(segments) else segments[index + 1][0] - 1
            if last > lsn:
                break
            if is_open:
                self._close_segment()
            path.unlink(missing_ok=True)
            dropped = True
        if dropped:
            fsync_directory(self.state.path)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError):
        return f"{error.strerror or error} (errno {error.errno})"
    return f"{type(error).__name__}: {error}"
