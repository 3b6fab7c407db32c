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


class LocalRuns:
    """Run ids the daemon does not know: opened offline (the id exists only here), or
    forgotten by the daemon (NOT_FOUND, e.g. after a restart). Calls for such a run are
    sent without its run_id, so the usage is still recorded in the ledgers. Bounded like
    `HeldReservations` (the oldest id is forgotten first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def opened_offline(self, run_id: str) -> None:
        self._add(run_id, "offline")

    def opened(self, run_id: str) -> None:
        """The daemon opened the run (an id reused after it was offline or forgotten)."""
        with self._lock:
            self._ids.pop(run_id, None)

    def forgotten(self, run_id: str, why: object) -> None:
        """The daemon answered NOT_FOUND for the run: logged once per run."""
        with self._lock:
            if run_id in self._ids:
                return
        log.warning(
            "budgetd_client: the daemon does not know run %s (%s); its usage is recorded"
            " without the run from now on (ledger caps still apply, the run's totals and"
            " concurrency slot are lost)",
            run_id,
            why,
        )
        self._add(run_id, "forgotten")

    def is_offline(self, run_id: str) -> bool:
        with self._lock:
            return self._ids.get(run_id) == "offline"

    def on_server(self, run_id: str) -> str:
        """`run_id` if the daemon may know it, else "" (send the call without it)."""
        if not run_id:
            return run_id
        with self._lock:
            return "" if run_id in self._ids else run_id

    def _add(self, run_id: str, state: str) -> None:
        with self._lock:
            self._ids[run_id] = state
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
