"""The SDK's typed values: frozen dataclasses, never protobuf messages.

Conventions, the same everywhere: instants are timezone-aware `datetime`s in UTC, spans
are float seconds (`*_s`), money is integer micro-USD (`*_micro_usd`) with a `Decimal`
`cost_usd` view where a cost is reported. Results of calls answered while the daemon was
unreachable (fail-open, `on_unavailable="allow"`) carry `offline=True`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from budgetd_client.enums import Decision, Dimension, Enforcement, LedgerState, Severity

MICRO = Decimal(1_000_000)


def usd(micro_usd: int) -> Decimal:
    """Exact US dollars of a micro-USD amount (no float rounding)."""
    return Decimal(micro_usd) / MICRO


@dataclass(frozen=True, slots=True)
class Usage:
    """What one model call used, or is expected to use (an estimate).

    `cost_micro_usd` set wins over the server's price table; left `None`, the server
    prices the usage from `model`. `cached_input_tokens` (prompt-cache reads) and
    `cache_write_input_tokens` (cache creation) are parts of `input_tokens`,
    `reasoning_tokens` a part of `output_tokens`. Latency: `latency_us` (microseconds)
    when set, else `latency_ms`.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_micro_usd: int | None = None
    model: str = ""
    provider: str = ""
    latency_ms: int = 0
    cache_write_input_tokens: int = 0
    reasoning_tokens: int = 0
    latency_us: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Totals:
    """Totals of a ledger window or of a run. `cost_micro_usd` is a lower bound when
    `unpriced_requests` > 0."""

    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_micro_usd: int = 0
    requests: int = 0
    unpriced_requests: int = 0
    run_duration_ms: int = 0
    latency_ms_sum: int = 0
    latency_samples: int = 0
    first_use: datetime | None = None
    last_use: datetime | None = None
    cache_write_input_tokens: int = 0
    reasoning_tokens: int = 0
    latency_us_sum: int = 0
    unpriced_tokens: int = 0

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_micro_usd)

    @property
    def average_latency_ms(self) -> float | None:
        if not self.latency_samples:
            return None
        return self.latency_us_sum / self.latency_samples / 1000


@dataclass(frozen=True, slots=True)
class LedgerBrief:
    """A ledger as the answers of reserve, commit, consume and open_run name it."""

    key: str
    state: LedgerState


@dataclass(frozen=True, slots=True)
class DimensionStatus:
    """One capped dimension of a ledger; `percent` excludes reservations."""

    dimension: Dimension
    used: int
    reserved: int
    limit: int
    remaining: int
    percent: int
    # When what is used starts to come back (window end; oldest sliding usage).
    resets_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """The full state of one ledger (`get_ledger`, `list_ledgers`, `check`)."""

    key: str
    policy: str
    labels: Mapping[str, str]
    state: LedgerState
    dimensions: tuple[DimensionStatus, ...]
    totals: Totals
    window_start: datetime
    window_end: datetime | None
    enforcement: Enforcement
    open_runs: int
    reservations: int

    def dimension(self, dimension: Dimension) -> DimensionStatus | None:
        """The status of one capped dimension; None when the policy does not cap it."""
        return next((d for d in self.dimensions if d.dimension is dimension), None)


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why a request was (HARD) or would have been (SOFT, SHADOW) denied."""

    policy: str
    ledger: str
    dimension: Dimension
    used: int
    reserved: int
    requested: int
    limit: int
    shortfall: int
    enforcement: Enforcement
    # When the blocking amount comes back by time alone; None: not by time (lifetime
    # caps, concurrency, reservations holding it, an unpriced estimate).
    resets_at: datetime | None = None
    # True: a cost cap refused an estimate it cannot price (`model` has no price).
    unpriced: bool = False
    model: str = ""


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold a ledger just crossed (fires once per ledger and window)."""

    policy: str
    ledger: str
    dimension: Dimension
    percent: int
    severity: Severity
    used: int
    limit: int
    percent_used: int = 0
    remaining: int = 0


@dataclass(frozen=True, slots=True)
class Overrun:
    """A dimension where a commit's actual usage exceeded the reservation."""

    dimension: Dimension
    reserved: int
    actual: int


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Whether an estimate fits. `check` never raises on DENY: look at `allowed`."""

    decision: Decision
    ledgers: tuple[LedgerStatus, ...]
    blockers: tuple[Blocker, ...]
    warnings: tuple[Blocker, ...]
    cost_known: bool
    estimated_cost_micro_usd: int
    offline: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision is not Decision.deny

    @property
    def estimated_cost_usd(self) -> Decimal:
        return usd(self.estimated_cost_micro_usd)


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """A granted hold (a denied reserve raises `BudgetExhausted` instead).

    `expires_at` is None only for an offline reservation, which holds nothing anywhere.
    """

    reservation_id: str
    decision: Decision
    expires_at: datetime | None
    ledgers: tuple[LedgerBrief, ...]
    warnings: tuple[Blocker, ...]
    cost_known: bool
    reserved_cost_micro_usd: int
    replayed: bool = False
    offline: bool = False


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The usage recorded by a commit. Offline, it is buffered and nothing is known yet."""

    ledgers: tuple[LedgerBrief, ...]
    crossings: tuple[Crossing, ...]
    overruns: tuple[Overrun, ...]
    cost_known: bool
    cost_micro_usd: int
    replayed: bool = False
    offline: bool = False

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_micro_usd)


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    """The usage recorded by a consume. Offline, it is buffered and nothing is known yet."""

    ledgers: tuple[LedgerBrief, ...]
    crossings: tuple[Crossing, ...]
    cost_known: bool
    cost_micro_usd: int
    replayed: bool = False
    offline: bool = False

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_micro_usd)


@dataclass(frozen=True, slots=True)
class Run:
    """An open run (a denied open_run raises `BudgetExhausted` instead).

    `expires_at` is None only offline; `deadline` is None when no run-duration cap applies.
    """

    run_id: str
    decision: Decision
    expires_at: datetime | None
    deadline: datetime | None
    ledgers: tuple[LedgerBrief, ...]
    warnings: tuple[Blocker, ...]
    replayed: bool = False
    offline: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """A run's new expiry; the deadline does not move."""

    expires_at: datetime
    deadline: datetime | None


@dataclass(frozen=True, slots=True)
class RunTotals:
    """A closed run's final figures."""

    run_id: str
    totals: Totals
    duration_s: float
    closed_ledgers: tuple[LedgerStatus, ...]
    replayed: bool = False
