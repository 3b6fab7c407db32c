"""Process-level tuning: the cyclic collector kept from pausing the server.

The engine keeps millions of long-lived objects (ledgers, their counters, remembered
answers). CPython's cyclic collector walks every object of a generation it collects, so
a full collection at a million ledgers pauses the server for a second, and the hot path
itself creates almost no reference cycles (results and events are freed by reference
counting; grpc.aio leaves a few per call, which the young collections take). So:

- once the state is loaded, everything alive is frozen out of the collector's reach
  (`settle_heap`);
- while the daemon runs, what grows into the oldest generation (new ledgers, remembered
  answers) is frozen in its turn once there is more of it than a collection walks in a
  few milliseconds (`Collector.maintain`, on the daemon's tick). At a steady state
  (state neither growing nor shrinking) nothing more is frozen. What is frozen is freed
  by reference counting like anything else; only a reference cycle among frozen objects
  would stay (the engine's state holds none; the few objects of calls in flight at the
  moment of a freeze are the bound on what a freeze can keep);
- the young generation is collected every YOUNG_COLLECTION_THRESHOLD container
  allocations, small enough that one young collection is short.

`Collector` also times every collection (gc.callbacks) for GetServerInfo and the bench.
"""

from __future__ import annotations

import gc
import time
from typing import Any

# Young-generation threshold (allocations of container objects between collections);
# CPython's default is 700, and the middle generation, collected every 10 young ones,
# holds what survived them: this bounds what it walks.
YOUNG_COLLECTION_THRESHOLD = 10_000
# Unfrozen objects in the oldest generation past which they are frozen: a full
# collection walks them (~10-20 ns each), so this keeps it to a few milliseconds.
FREEZE_ABOVE = 100_000
OLDEST = 2


def settle_heap() -> None:
    """Collect once, then freeze every object alive now out of future collections."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


class Collector:
    """Times the collector's pauses and keeps the oldest generation small."""

    def __init__(self, freeze_above: int = FREEZE_ABOVE) -> None:
        self.freeze_above = freeze_above
        self.collections = 0
        self.longest_pause_s = 0.0
        self.freezes = 0
        self._began = 0.0
        self._middle_seen = -1  # middle-generation collections at the last look

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = time.perf_counter() - self._began
        self.collections += 1
        self.longest_pause_s = max(self.longest_pause_s, pause)

    def maintain(self) -> bool:
        """Freeze the oldest generation once it holds more than `freeze_above` objects
        (True when it did). Looks only when a middle-generation collection has moved
        objects into it since the last look: counting it walks a list."""
        middle = gc.get_stats()[1]["collections"]
        if middle == self._middle_seen:
            return False
        self._middle_seen = middle
        if len(gc.get_objects(OLDEST)) <= self.freeze_above:
            return False
        gc.freeze()
        self.freezes += 1
        return True
