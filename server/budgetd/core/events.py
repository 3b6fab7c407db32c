"""Plain event objects the core returns with each operation, for the stream to publish.

The core never publishes: it returns what happened, and the caller assigns sequence
numbers and fans events out after the operation has fully applied. Events are values:
nobody mutates one after it is made (they are plain slotted dataclasses, not frozen
ones, because a frozen dataclass costs five times as much to build on the hot path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from budgetd.core.dimensions import (
    CACHE_WRITE_INPUT_TOKENS,
    CACHED_INPUT_TOKENS,
    LATENCY_SAMPLES,
    LATENCY_US_SUM,
    REASONING_TOKENS,
    UNPRICED_REQUESTS,
    UNPRICED_TOKENS,
    Dimension,
)
from budgetd.core.policy import Enforcement, LedgerState, Severity
from budgetd.core.usage import Usage


@dataclass(slots=True)
class Totals:
    """Everything a ledger window or a run counted: the record billing needs."""

    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_micro_usd: int = 0
    requests: int = 0
    unpriced_requests: int = 0
    run_duration_ms: int = 0
    latency_us_sum: int = 0
    latency_samples: int = 0
    first_use: float | None = None
    last_use: float | None = None
    cache_write_input_tokens: int = 0
    reasoning_tokens: int = 0
    unpriced_tokens: int = 0

    @classmethod
    def of(cls, vector: list[int], first_use: float | None, last_use: float | None) -> Totals:
        return cls(
            total_tokens=vector[Dimension.TOTAL_TOKENS],
            input_tokens=vector[Dimension.INPUT_TOKENS],
            output_tokens=vector[Dimension.OUTPUT_TOKENS],
            cached_input_tokens=vector[CACHED_INPUT_TOKENS],
            cost_micro_usd=vector[Dimension.COST_MICRO_USD],
            requests=vector[Dimension.REQUESTS],
            unpriced_requests=vector[UNPRICED_REQUESTS],
            run_duration_ms=vector[Dimension.RUN_DURATION_MS],
            latency_us_sum=vector[LATENCY_US_SUM],
            latency_samples=vector[LATENCY_SAMPLES],
            first_use=first_use,
            last_use=last_use,
            cache_write_input_tokens=vector[CACHE_WRITE_INPUT_TOKENS],
            reasoning_tokens=vector[REASONING_TOKENS],
            unpriced_tokens=vector[UNPRICED_TOKENS],
        )

    @property
    def average_latency_ms(self) -> float | None:
        if not self.latency_samples:
            return None
        return self.latency_us_sum / self.latency_samples / 1000


@dataclass(slots=True)
class Blocker:
    """A cap a request does not fit: used + reserved + requested would exceed limit."""

    policy: str
    ledger: str
    dimension: Dimension
    used: int
    reserved: int
    requested: int
    limit: int
    enforcement: Enforcement
    # When the blocking amount comes back (None: not by time alone, or never).
    resets_at: float | None = None
    # True: a cost cap that cannot price the estimate of `model` (requested 0).
    unpriced: bool = False
    model: str = ""
    # True: a global policy's cap has room, but this sidecar's lease of it does not
    # (yet): it leases more from Redis, or Redis is out of reach (budgetd.core.shares).
    lease: bool = False

    @property
    def shortfall(self) -> int:
        """How far over the limit the request would go."""
        return max(0, self.used + self.reserved + self.requested - self.limit)


class RunEndReason(Enum):
    CLOSED = "closed"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    DURATION_EXCEEDED = "duration_exceeded"


class LedgerClosedReason(Enum):
    RESET = "reset"
    EVICTED = "evicted"
    RUN_CLOSED = "run_closed"
    POLICY_DELETED = "policy_deleted"
    POLICY_CHANGED = "policy_changed"
    IDLE = "idle"


@dataclass(slots=True)
class UsageRecorded:
    at: float
    labels: Mapping[str, str]
    request_id: str
    run_id: str
    usage: Usage
    cost_micro_usd: int | None  # None: the model's price is unknown
    ledgers: tuple[tuple[str, LedgerState], ...]  # (key, state after) of every ledger counted


@dataclass(slots=True)
class ThresholdCrossed:
    at: float
    policy: str
    ledger: str
    dimension: Dimension
    percent: int
    severity: Severity
    used: int
    limit: int
    remaining: int
    labels: Mapping[str, str]  # the ledger's (Ledger.label_map)


@dataclass(slots=True)
class LedgerExhausted:
    at: float
    policy: str
    ledger: str
    dimension: Dimension
    used: int
    limit: int
    labels: Mapping[str, str]


@dataclass(slots=True)
class Denied:
    """A cap was hit: HARD denied the request, SOFT allowed it with a warning, SHADOW
    allowed it and reports what HARD would have done."""

    at: float
    labels: Mapping[str, str]
    blocker: Blocker
    request_id: str = ""  # of the Reserve or OpenRun; empty for a run's duration cap
    run_id: str = ""


@dataclass(slots=True)
class ReservationExpired:
    at: float
    reservation_id: str
    labels: Mapping[str, str]
    estimate: Usage


@dataclass(slots=True)
class RunOpened:
    at: float
    run_id: str
    labels: Mapping[str, str]


@dataclass(slots=True)
class RunEnded:
    at: float
    run_id: str
    labels: Mapping[str, str]
    reason: RunEndReason
    totals: Totals
    duration_s: float


@dataclass(slots=True)
class WindowRolledOver:
    at: float
    policy: str
    ledger: str
    window_start: float
    window_end: float
    totals: Totals  # of the window that closed
    labels: Mapping[str, str]


@dataclass(slots=True)
class LedgerClosed:
    at: float
    policy: str
    ledger: str
    reason: LedgerClosedReason
    totals: Totals  # final totals of the ledger's current window
    labels: Mapping[str, str]


@dataclass(slots=True)
class PolicyChanged:
    at: float
    name: str
    deleted: bool


Event = (
    UsageRecorded
    | ThresholdCrossed
    | LedgerExhausted
    | Denied
    | ReservationExpired
    | RunOpened
    | RunEnded
    | WindowRolledOver
    | LedgerClosed
    | PolicyChanged
)
