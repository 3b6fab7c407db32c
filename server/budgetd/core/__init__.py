"""The pure ledger core: policies, ledgers, windows, prices and the engine.

No gRPC, asyncio, file or clock imports live here: time is an argument, results and
events are plain objects, and every operation is synchronous and atomic.
"""

from budgetd.core import engine as _engine
from budgetd.core.decisions import usage_delta
from budgetd.core.default_prices import default_price_table
from budgetd.core.defaults import default_policies
from budgetd.core.dimensions import Dimension
from budgetd.core.engine import Engine
from budgetd.core.errors import (
    BudgetError,
    Conflict,
    InvalidArgument,
    InvariantBroken,
    LimitReached,
    NotFound,
)
from budgetd.core.events import (
    Blocker,
    Denied,
    Event,
    LedgerClosed,
    LedgerClosedReason,
    LedgerExhausted,
    PolicyChanged,
    ReservationExpired,
    RunEnded,
    RunEndReason,
    RunOpened,
    ThresholdCrossed,
    Totals,
    UsageRecorded,
    WindowRolledOver,
)
from budgetd.core.limits import Limits
from budgetd.core.mutations import Mutation
from budgetd.core.policy import (
    CalendarUnit,
    Enforcement,
    LedgerState,
    Policy,
    Severity,
    Threshold,
    Window,
    WindowKind,
)
from budgetd.core.prices import Price, PriceTable
from budgetd.core.results import (
    CheckResult,
    CloseRunResult,
    CommitResult,
    ConsumeResult,
    Decision,
    DeletePolicyResult,
    DimensionStatus,
    HeartbeatResult,
    LedgerPage,
    LedgerStatus,
    OpenRunResult,
    Overrun,
    PutPolicyResult,
    ReleaseResult,
    ReserveResult,
    ResetResult,
)
from budgetd.core.usage import Usage

# True when the core runs as extension modules compiled by mypyc (`make native`): the
# daemon and the benchmarks say which one they run.
COMPILED: bool = not (_engine.__file__ or "").endswith(".py")

__all__ = [
    "COMPILED",
    "Blocker",
    "BudgetError",
    "CalendarUnit",
    "CheckResult",
    "CloseRunResult",
    "CommitResult",
    "Conflict",
    "ConsumeResult",
    "Decision",
    "DeletePolicyResult",
    "Denied",
    "Dimension",
    "DimensionStatus",
    "Enforcement",
    "Engine",
    "Event",
    "HeartbeatResult",
    "InvalidArgument",
    "InvariantBroken",
    "LedgerClosed",
    "LedgerClosedReason",
    "LedgerExhausted",
    "LedgerPage",
    "LedgerState",
    "LedgerStatus",
    "LimitReached",
    "Limits",
    "Mutation",
    "NotFound",
    "OpenRunResult",
    "Overrun",
    "Policy",
    "PolicyChanged",
    "Price",
    "PriceTable",
    "PutPolicyResult",
    "ReleaseResult",
    "ReservationExpired",
    "ReserveResult",
    "ResetResult",
    "RunEndReason",
    "RunEnded",
    "RunOpened",
    "Severity",
    "Threshold",
    "ThresholdCrossed",
    "Totals",
    "Usage",
    "UsageRecorded",
    "Window",
    "WindowKind",
    "WindowRolledOver",
    "default_policies",
    "default_price_table",
    "usage_delta",
]
