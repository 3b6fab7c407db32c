"""Waiting on a condition, bounded: the one poll loop the suites share.

A test waits for something to become true (a counter back to zero, a slot freed) and
never for a length of time; the bound only turns a broken server into a failure rather
than a hang, so it is generous and never asserted on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

POLL_S = 0.005


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    limit_s: float = 30.0,
    between: Callable[[], None] | None = None,
) -> int:
    """Return once `condition()` holds (how many rounds it took), calling `between`
    each round; AssertionError naming `what` past `limit_s`."""
    rounds, deadline, pause = 0, time.monotonic() + limit_s, threading.Event()
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"never happened within {limit_s:g} s: {what}")
        if between is not None:
            between()
        rounds += 1
        pause.wait(POLL_S)
    return rounds
