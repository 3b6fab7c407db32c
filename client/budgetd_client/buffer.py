"""The offline buffer: usage recorded while the daemon was unreachable, to replay later.

Usage is a fact, so with `on_unavailable="allow"` a Consume (or the commit of an offline
reservation) that cannot reach the daemon is kept here, with its `request_id`, and sent
again, in order, once it answers. The server is idempotent on `request_id`, so a record
that did reach it before the connection broke is answered `replayed` and not counted
twice. The buffer is bounded: when it is full the oldest record is dropped, counted in
`dropped` and logged as a warning. Losing usage is never silent.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from budgetd.v1 import budget_pb2 as pb
from budgetd_client.errors import AlreadyExists, BudgetdError

log = logging.getLogger("budgetd_client")


@dataclass(frozen=True, slots=True, eq=False)
class Record:
    """One Consume to replay. `release_id`: a reservation still held on the server for
    this usage (its commit could not be sent), released once the usage is recorded."""

    request: pb.ConsumeRequest
    release_id: str = ""
    release_request_id: str = ""


class OfflineBuffer:
    """A bounded FIFO of records; thread-safe (the sync client's heartbeat thread and the
    caller's threads share it)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"buffer_size must be >= 0, got {size}")
        self.size = size
        self.dropped = 0
        self._records: deque[Record] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: Record) -> None:
        with self._lock:
            self._records.append(record)
            while len(self._records) > self.size:
                self._drop(self._records.popleft(), "the offline buffer is full")

    def head(self) -> Record | None:
        """The oldest record, left in place until `settle`."""
        with self._lock:
            return self._records[0] if self._records else None

    def settle(self, record: Record, error: BudgetdError | None) -> None:
        """Remove a replayed record: delivered (`error` None), already known to the server
        under its request_id (ALREADY_EXISTS: a commit with that id got through), or
        rejected by the server (dropped, counted and logged)."""
        with self._lock:
            if self._records and self._records[0] is record:
                self._records.popleft()
            if error is not None and not isinstance(error, AlreadyExists):
                self._drop(record, f"the server rejected it: {error}")

    def drop_all(self, why: str) -> None:
        with self._lock:
            while self._records:
                self._drop(self._records.popleft(), why)

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
