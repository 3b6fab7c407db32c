"""What each operation answers.

Results are values: the engine keeps them to answer a repeated request_id, so nobody
mutates one after it is made (slotted dataclasses, not frozen ones, for build speed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from budgetd.core.dimensions import Dimension
from budgetd.core.events import Blocker, ThresholdCrossed, Totals
from budgetd.core.policy import Enforcement, LedgerState


class Decision(Enum):
    ALLOW = "allow"
    ALLOW_WITH_WARNING = "allow_with_warning"
    DENY = "deny"


# (ledger key, state after the operation): the cheap answer of the hot-path operations.
LedgerBrief = tuple[str, LedgerState]


@dataclass(slots=True)
class DimensionStatus:
    dimension: Dimension
    used: int
    reserved: int
    limit: int
    # When what is used starts to come back (window end, oldest sliding usage); None
    # for lifetime windows, gauges and when nothing is used.
    resets_at: float | None = None

    @property
    def remaining(self) -> int:
        """Headroom left for new holds; never negative."""
        return max(0, self.limit - self.used - self.reserved)

    @property
    def percent_used(self) -> int:
        return self.used * 100 // self.limit if self.limit else (100 if self.used else 0)


@dataclass(frozen=True, slots=True)
class ShareView:
    """What GetLedger shows of a global ledger's share."""

    global_used: dict[int, int]  # per capped dimension, as far as this sidecar knows
    lease_remaining: dict[int, int]  # per capped dimension: what this sidecar may grant
    bound: dict[int, int]  # per capped dimension: the most granted past the cap
    sidecars: int
    reachable: bool
    lease_until: float
    synced_at: float
    unsettled: dict[int, int]  # per capped dimension: own usage Redis does not have yet


@dataclass(slots=True)
class LedgerStatus:
    key: str
    policy: str
    labels: Mapping[str, str]
    state: LedgerState
    enforcement: Enforcement
    dimensions: tuple[DimensionStatus, ...]  # one per capped dimension
    totals: Totals  # of the current window
    window_start: float
    window_end: float | None  # None: lifetime
    open_runs: int
    reservations: int
    run_duration_limit_ms: int | None  # per-run wall-clock cap, if any
    # A global policy's ledger: this sidecar's share of it (None: local, or not leased).
    share: ShareView | None = None


@dataclass(slots=True)
class CheckResult:
    decision: Decision
    ledgers: tuple[LedgerStatus, ...]
    blockers: tuple[Blocker, ...]  # hard caps that deny
    warnings: tuple[Blocker, ...]  # soft and shadow caps exceeded
    cost_micro_usd: int | None


@dataclass(slots=True)
class ReserveResult:
    decision: Decision
    reservation_id: str  # empty when denied
    expires_at: float | None
    ledgers: tuple[LedgerBrief, ...]
    blockers: tuple[Blocker, ...]
    warnings: tuple[Blocker, ...]
    cost_micro_usd: int | None
    replayed: bool = False


@dataclass(slots=True)
class Overrun:
    """Actual usage above what the reservation held (recorded all the same)."""

    dimension: Dimension
    reserved: int
    actual: int


@dataclass(slots=True)
class ConsumeResult:
    ledgers: tuple[LedgerBrief, ...]
    crossings: tuple[ThresholdCrossed, ...]
    cost_micro_usd: int | None
    replayed: bool = False


@dataclass(slots=True)
class CommitResult:
    ledgers: tuple[LedgerBrief, ...]
    crossings: tuple[ThresholdCrossed, ...]
    overruns: tuple[Overrun, ...]
    cost_micro_usd: int | None
    late: bool  # the hold had already expired; the usage was recorded anyway
    replayed: bool = False


@dataclass(slots=True)
class ReleaseResult:
    released: bool  # False when the hold had already expired
    replayed: bool = False


@dataclass(slots=True)
class OpenRunResult:
    decision: Decision
    run_id: str
    expires_at: float | None
    deadline: float | None  # set when a hard run_duration cap applies
    ledgers: tuple[LedgerBrief, ...]
    blockers: tuple[Blocker, ...]
    warnings: tuple[Blocker, ...]
    replayed: bool = False


@dataclass(slots=True)
class HeartbeatResult:
    expires_at: float
    deadline: float | None


@dataclass(slots=True)
class CloseRunResult:
    run_id: str
    totals: Totals
    duration_s: float
    closed_ledgers: tuple[LedgerStatus, ...]
    replayed: bool = False


@dataclass(slots=True)
class ResetResult:
    final: LedgerStatus
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RunInfo:
    """An open run, as ListRuns shows it."""

    run_id: str
    labels: Mapping[str, str]
    opened_at: float
    last_heartbeat: float
    expires_at: float  # when it ends without a heartbeat (or at its hard deadline)
    deadline: float | None  # its hard run_duration deadline, if a policy sets one
    totals: Totals  # usage recorded in the run so far


@dataclass(slots=True)
class RunPage:
    runs: tuple[RunInfo, ...]
    next_page_token: str  # empty at the end


@dataclass(slots=True)
class LedgerPage:
    ledgers: tuple[LedgerStatus, ...]
    next_page_token: str  # empty at the end


@dataclass(slots=True)
class PutPolicyResult:
    created: bool  # False: an existing policy was replaced
    closed_ledgers: int  # ledgers closed because match, per or window changed


@dataclass(frozen=True, slots=True)
class ReplacePoliciesResult:
    """What a reload changed, by policy name (each sorted)."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(slots=True)
class DeletePolicyResult:
    closed_ledgers: tuple[LedgerStatus, ...]  # final state of every ledger it had


Result = (
    ReserveResult
    | ConsumeResult
    | CommitResult
    | ReleaseResult
    | OpenRunResult
    | CloseRunResult
    | ResetResult
)
