"""The Python SDK of budgetd, the budget sidecar for LLM agents.

`BudgetClient` (blocking) and `AsyncBudgetClient` (asyncio) have the same API; results
are frozen dataclasses (`budgetd_client.models`, `budgetd_client.events`), errors are
typed (`budgetd_client.errors`).
"""

from __future__ import annotations

from budgetd_client.aio import AsyncBudgetClient
from budgetd_client.client import BudgetClient
from budgetd_client.coalescing import Coalescing, CoalescingStats
from budgetd_client.enums import (
    Decision,
    Dimension,
    Enforcement,
    EventKind,
    LedgerClosedReason,
    LedgerState,
    RunEndReason,
    Severity,
)
from budgetd_client.errors import (
    AlreadyExists,
    BudgetdError,
    BudgetdUnavailable,
    BudgetExhausted,
    ClientClosed,
    CredentialsError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServerBusy,
    Unauthenticated,
    WrongEventLoop,
)
from budgetd_client.events import Event
from budgetd_client.models import (
    Blocker,
    CheckResult,
    CommitResult,
    ConsumeResult,
    Crossing,
    DimensionStatus,
    HeartbeatResult,
    LedgerBrief,
    LedgerStatus,
    Overrun,
    ReserveResult,
    Run,
    RunTotals,
    Totals,
    Usage,
)
from budgetd_client.reservation import AsyncReservation, PendingReservation, Reservation
from budgetd_client.retry import Backoff
from budgetd_client.session import AsyncRunSession, RunSession
from budgetd_client.subscription import AsyncSubscription, Subscription

# The distribution's version (client/pyproject.toml reads it from here).
__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "AsyncBudgetClient",
    "AsyncReservation",
    "AsyncRunSession",
    "AsyncSubscription",
    "Backoff",
    "Blocker",
    "BudgetClient",
    "BudgetExhausted",
    "BudgetdError",
    "BudgetdUnavailable",
    "CheckResult",
    "ClientClosed",
    "Coalescing",
    "CoalescingStats",
    "CommitResult",
    "ConsumeResult",
    "CredentialsError",
    "Crossing",
    "Decision",
    "Dimension",
    "DimensionStatus",
    "Enforcement",
    "Event",
    "EventKind",
    "HeartbeatResult",
    "InvalidRequest",
    "LedgerBrief",
    "LedgerClosedReason",
    "LedgerState",
    "LedgerStatus",
    "NotFound",
    "Overrun",
    "PendingReservation",
    "PermissionDenied",
    "Reservation",
    "ReserveResult",
    "Run",
    "RunEndReason",
    "RunSession",
    "RunTotals",
    "ServerBusy",
    "Severity",
    "Subscription",
    "Totals",
    "Unauthenticated",
    "Usage",
    "WrongEventLoop",
]
