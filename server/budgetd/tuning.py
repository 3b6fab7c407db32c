"""Process-level tuning: the cyclic collector kept from pausing the server.

The engine keeps millions of long-lived objects (ledgers, their counters, remembered
answers). CPython's cyclic collector walks every object of the generations it collects,
so a full collection at a million ledgers pauses the server for a second, while the hot
path itself makes almost no reference cycles: results and events are freed by reference
counting, and the five objects grpc.aio leaves in a cycle per call (its handler lookup's
closure) are garbage before the handler even runs, so the young collections take them.
So:

- once the state is loaded, everything alive is frozen out of the collector's reach
  (`settle_heap`);
- while the daemon runs, what grows into the oldest generation (new ledgers, remembered
  answers) is collected and what survives frozen in its turn, as soon as there is more
  of it than a collection walks in a few milliseconds (`Collector.maintain`, every
  MAINTAIN_EVERY_S on the event loop). A full collection then never walks more than
  that. Freezing right after a full collection keeps no garbage: what is frozen is
  alive, and is freed by reference counting when it goes (only a reference cycle among
  frozen objects would stay, and the engine's state holds none). At a steady state
  nothing more is frozen. (What a call in flight holds is frozen with it; were any of
  it a cycle, it would stay once the call ends. Measured: 15 s rounds of Consume at
  c=64, 80k-120k requests, grew RSS by 699 B per remembered request freezing every 50k
  objects and 715 B every 5k, a difference within the noise of the measure);
- the young generation is collected every YOUNG_COLLECTION_THRESHOLD container
  allocations and the middle one every MIDDLE_COLLECTION_THRESHOLD young collections:
  while the state grows, most young objects survive, and these bound what one
  collection of either walks.

`Collector` also times every collection (gc.callbacks) for GetServerInfo and the bench.
"""

from __future__ import annotations

import gc
import time
from typing import Any

# Container allocations between young collections (CPython's default is 700). Small
# generations are walked while their objects are still in the CPU's caches: with the
# state growing, 1,000 took a third of the collector time of 10,000 and bounded every
# pause to a few ms, where 10,000 gave pauses of 25-100 ms (a million-ledger fill).
YOUNG_COLLECTION_THRESHOLD = 1_000
# Young collections between collections of the middle generation (CPython's: 10).
MIDDLE_COLLECTION_THRESHOLD = 2
# Unfrozen objects in the oldest generation past which they are collected and frozen:
# a full collection walks them and every younger one (100-600 ns each in a heap of a
# million ledgers, most of them cache misses), so this keeps it to a few ms. Looked at
# every MAINTAIN_EVERY_S: at ~50k new long-lived objects a second under load, a longer
# period lets the oldest generation pass the bound by more than the bound itself.
FREEZE_ABOVE = 5_000
MAINTAIN_EVERY_S = 0.01
OLDEST = 2


def settle_heap() -> None:
    """Collect once, then freeze every object alive now out of future collections."""
    gc.collect()
    gc.freeze()
    oldest = gc.get_threshold()[2]
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, MIDDLE_COLLECTION_THRESHOLD, oldest)


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
        """Collect and freeze the oldest generation once it holds more than
        `freeze_above` objects (True when it did). Looks only when a collection of the
        middle generation has moved objects into it since the last look: counting the
        oldest generation walks a list."""
        middle = gc.get_stats()[1]["collections"]
        if middle == self._middle_seen:
            return False
        self._middle_seen = middle
        if len(gc.get_objects(OLDEST)) <= self.freeze_above:
            return False
        gc.collect()  # walks only what is not frozen: about freeze_above objects
        gc.freeze()
        self.freezes += 1
        self._middle_seen = gc.get_stats()[1]["collections"]
        return True
