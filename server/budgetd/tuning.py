"""Process-level tuning the daemon applies once its state is loaded (and the bench too).

The engine keeps millions of long-lived objects (ledgers, their counters, remembered
answers). CPython's cyclic collector would walk all of them on every full collection,
a pause of up to a second at a million ledgers, and trigger young collections every 700
container allocations. The hot path creates almost no reference cycles (results and
events are freed by reference counting), so budgetd moves what exists at start-up out of
the collector's reach and collects the young generation less often.
"""

from __future__ import annotations

import gc

# Young-generation threshold (allocations of container objects between collections);
# CPython's default is 700. The older generations keep their default ratios.
YOUNG_COLLECTION_THRESHOLD = 50_000


def settle_heap() -> None:
    """Collect once, then freeze every object alive now out of future collections."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
