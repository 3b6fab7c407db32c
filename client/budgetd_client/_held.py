"""What the client remembers of the reservations it holds, for failing open.

A Commit sends only the reservation's id; to record its usage as a buffered Consume when
the daemon is unreachable, the client needs the reservation's labels, estimate and run.
It keeps them from Reserve until Commit or Release. Bounded: past `capacity` the oldest
entry is forgotten with a warning (its commit then just cannot fail open).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from budgetd_client.models import Usage

log = logging.getLogger("budgetd_client")


@dataclass(frozen=True, slots=True)
class Held:
    labels: Mapping[str, str]
    estimate: Usage
    run_id: str
    offline: bool


class HeldReservations:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Held] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, reservation_id: str, held: Held) -> None:
        with self._lock:
            self._entries[reservation_id] = held
            if len(self._entries) > self.capacity:
                forgotten, _ = self._entries.popitem(last=False)
                log.warning(
                    "budgetd_client: more than %d reservations neither committed nor released;"
                    " forgetting %s (commit it while the daemon is up)",
                    self.capacity,
                    forgotten,
                )

    def get(self, reservation_id: str) -> Held | None:
        with self._lock:
            return self._entries.get(reservation_id)

    def pop(self, reservation_id: str) -> Held | None:
        with self._lock:
            return self._entries.pop(reservation_id, None)
