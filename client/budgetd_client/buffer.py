"""What the client owes the daemon after failing open, kept to replay once it answers.

Usage is a fact, so with `on_unavailable="allow"` a Consume (or the commit of an offline
reservation) that cannot reach the daemon is kept in the `OfflineBuffer`, with its
`request_id`, and sent again, in order, once it answers. The server is idempotent on
`request_id`, so a record that did reach it before the connection broke is answered
`replayed` and not counted twice. The buffer is bounded: when it is full the oldest record
is dropped, counted in `dropped` and logged as a warning. Losing usage is never silent.

A Reserve or OpenRun answered offline may have reached the daemon all the same (only its
answer was lost): the daemon then holds a reservation or a run slot nobody will commit or
close. Such a grant is an `Orphan`, undone once the daemon answers. A Reserve is sent
again (same `request_id`: the daemon answers from memory, with the real reservation id)
and what it got is released. A run's id is the client's own, so it is closed directly:
replaying an OpenRun that never arrived would open a run, take a concurrency slot, and
closing it would close the `close_with_run` ledgers of the run's labels. Orphans are
bounded too; one pushed out is only logged (its hold ends at its ttl anyway).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from budgetd_client.errors import AlreadyExists, BudgetdError
from budgetd_client.v1 import budget_pb2 as pb

log = logging.getLogger("budgetd_client")

Step = tuple[str, Message]  # a method name and its request


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One Consume to replay. `release_id`: a reservation still held on the server for
    this usage (its commit could not be sent), released once the usage is recorded."""

    request: pb.ConsumeRequest
    release_id: str = ""
    release_request_id: str = ""

    def first(self) -> Step:
        return "Consume", self.request

    def follow_up(self, response: Any) -> Step | None:
        if not self.release_id:
            return None
        release = pb.ReleaseRequest(
            request_id=self.release_request_id, reservation_id=self.release_id
        )
        return "Release", release


@dataclass(frozen=True, slots=True, eq=False)
class Orphan:
    """A Reserve or OpenRun answered offline after it was sent. Undone with
    `undo_request_id`: the Reserve is replayed and its reservation released; the run is
    closed (NOT_FOUND: it never opened, nothing to undo)."""

    request: pb.ReserveRequest | pb.OpenRunRequest
    undo_request_id: str

    @property
    def kind(self) -> str:
        return "Reserve" if isinstance(self.request, pb.ReserveRequest) else "OpenRun"

    def first(self) -> Step:
        if isinstance(self.request, pb.ReserveRequest):
            return "Reserve", self.request
        close = pb.CloseRunRequest(request_id=self.undo_request_id, run_id=self.request.run_id)
        return "CloseRun", close

    def follow_up(self, response: Any) -> Step | None:
        if not isinstance(self.request, pb.ReserveRequest):
            return None  # closed
        if response.decision == pb.DECISION_DENY:
            return None  # nothing was held
        release = pb.ReleaseRequest(
            request_id=self.undo_request_id, reservation_id=response.reservation_id
        )
        return "Release", release


Item = TypeVar("Item", Record, Orphan)


class Queue(ABC, Generic[Item]):
    """A bounded FIFO, thread-safe (callers' threads share it); the head stays in place
    until `settle`, so a replay interrupted by the daemon going away resumes with it."""

    full = "the queue is full"

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"buffer_size must be >= 0, got {size}")
        self.size = size
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)
            while len(self._items) > self.size:
                self._drop(self._items.popleft(), self.full)

    def head(self) -> Item | None:
        """The oldest item, left in place until `settle`."""
        with self._lock:
            return self._items[0] if self._items else None

    def settle(self, item: Item, error: BudgetdError | None) -> None:
        """Remove a replayed item: done (`error` None) or answered with an error."""
        with self._lock:
            if self._items and self._items[0] is item:
                self._items.popleft()
            if error is not None:
                self._rejected(item, error)

    def drop_all(self, why: str) -> int:
        """Drop every item (each logged); returns how many there were."""
        with self._lock:
            count = len(self._items)
            while self._items:
                self._drop(self._items.popleft(), why)
            return count

    def _rejected(self, item: Item, error: BudgetdError) -> None:
        self._drop(item, f"the server rejected it: {error}")

    @abstractmethod
    def _drop(self, item: Item, why: str) -> None:
        """Account for a lost item (each kind of queue counts and logs its own)."""


class OfflineBuffer(Queue[Record]):
    """Usage records; every one lost is counted in `dropped` and logged."""

    full = "the offline buffer is full"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.dropped = 0

    def _rejected(self, record: Record, error: BudgetdError) -> None:
        # ALREADY_EXISTS: a commit with this request_id got through, the usage is counted.
        if not isinstance(error, AlreadyExists):
            super()._rejected(record, error)

    def _drop(self, record: Record, why: str) -> None:
        self.dropped += 1
        usage = record.request.usage
        log.warning(
            "budgetd_client: dropped buffered usage record %s (%d input + %d output tokens, "
            "labels %s) because %s; %d record(s) dropped so far",
            record.request.request_id,
            usage.input_tokens,
            usage.output_tokens,
            dict(record.request.labels),
            why,
            self.dropped,
        )


class Orphans(Queue[Orphan]):
    """Grants that may be held on the daemon with nobody to settle them."""

    full = "too many grants to undo"

    def _rejected(self, orphan: Orphan, error: BudgetdError) -> None:
        log.info(
            "budgetd_client: undoing %s %s: nothing to undo (%s)",
            orphan.kind,
            orphan.request.request_id,
            error,
        )

    def _drop(self, orphan: Orphan, why: str) -> None:
        log.warning(
            "budgetd_client: gave up undoing %s %s because %s; if the daemon got it, it"
            " ends at its ttl",
            orphan.kind,
            orphan.request.request_id,
            why,
        )
