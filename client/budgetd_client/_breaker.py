"""A small circuit breaker: do not wait for timeouts again right after they happened.

Against a hung daemon (it accepts connections but never answers) every call costs
(retries + 1) x timeout_s before it can fail open. After one call found the daemon
unreachable, the breaker opens for `recheck_s`: calls go offline at once, without being
sent. When the interval is over, one call is let through as a probe, with a single
attempt; the others keep going offline until it answers. Any answer from the daemon, even
an error status, closes the breaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum


class Gate(Enum):
    closed = "closed"  # send as usual
    probe = "probe"  # send once: this call tells whether the daemon is back
    open = "open"  # do not send: go offline at once


class Breaker:
    def __init__(self, recheck_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.recheck_s = recheck_s
        self.clock = clock
        self._offline_until: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._offline_until is not None

    def gate(self) -> Gate:
        if self.recheck_s <= 0:
            return Gate.closed
        with self._lock:
            if self._offline_until is None:
                return Gate.closed
            if self._probing or self.clock() < self._offline_until:
                return Gate.open
            self._probing = True
            return Gate.probe

    def answered(self) -> None:
        """The daemon answered (a response or any status but UNAVAILABLE/DEADLINE)."""
        with self._lock:
            self._offline_until = None
            self._probing = False

    def unreachable(self) -> None:
        """A call gave up on the daemon (or a probe failed): go offline for `recheck_s`."""
        with self._lock:
            self._offline_until = self.clock() + self.recheck_s
            self._probing = False
