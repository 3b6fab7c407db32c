"""Request bytes that do not decode: INVALID_ARGUMENT and one log line a minute.

Left to gRPC, a request that does not parse answers UNKNOWN with the parser's exception
class in the message, and logs a traceback-sized line per call: a client sending
garbage in a loop fills the log. Each handler's deserializer is wrapped once, when the
gate registers it (`tolerant`): a request that does not decode becomes an
`Undecodable` value instead of an exception, the gate's handler answers it with
INVALID_ARGUMENT naming the method, and `UndecodableLog` writes at most one line per
interval with the count of those it left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from budgetd.logs import fields

log = logging.getLogger("budgetd.auth")
LOG_INTERVAL_S = 60.0


class Undecodable:
    """What a request that did not decode is handed to the gate as."""

    __slots__ = ("method",)

    def __init__(self, method: str) -> None:
        self.method = method

    def message(self) -> str:
        return f"the request bytes do not decode as the request message of {self.method}"


class RequestUndecodable(Exception):
    """Raised into a handler reading a request stream when a message does not decode;
    the gate turns it into INVALID_ARGUMENT."""


class UndecodableLog:
    """One warning per `interval_s` at most; the next line says how many it left out."""

    def __init__(
        self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last = -interval_s
        self.suppressed = 0

    def record(self, method: str, peer: str) -> bool:
        """Log this one unless a line was written within the interval; True if logged."""
        now = self.clock()
        if now - self._last < self.interval_s:
            self.suppressed += 1
            return False
        self._last = now
        left_out, self.suppressed = self.suppressed, 0
        log.warning(
            "request that does not decode answered INVALID_ARGUMENT",
            extra=fields(method=method, peer=peer, left_out_since_last_line=left_out),
        )
        return True


UNDECODABLE_LOG = UndecodableLog()


def tolerant(method: str, deserializer: Callable[[bytes], Any] | None) -> Any:
    """`deserializer` returning an `Undecodable` where it would raise."""
    if deserializer is None:  # raw bytes: nothing to decode
        return None
    undecodable = Undecodable(method)  # one per method: a refusal allocates nothing

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or whatever the parser raises on garbage
            return undecodable

    return deserialize
