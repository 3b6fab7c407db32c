"""Events delivered by `subscribe`: a typed payload per kind, as frozen dataclasses.

`Event.kind` says which payload class `Event.payload` is, so callers can either match on
the payload (`match event.payload: case UsageRecorded(): ...`) or switch on the kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from budgetd_client.enums import Dimension, EventKind, LedgerClosedReason, RunEndReason
from budgetd_client.models import Blocker, Crossing, Totals, Usage


@dataclass(frozen=True, slots=True)
class UsageRecorded:
    request_id: str
    run_id: str
    usage: Usage
    cost_micro_usd: int
    cost_known: bool
    ledger_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ThresholdCrossed:
    crossing: Crossing


@dataclass(frozen=True, slots=True)
class Denied:
    blocker: Blocker
    request_id: str
    run_id: str


@dataclass(frozen=True, slots=True)
class LedgerExhausted:
    policy: str
    ledger: str
    dimension: Dimension
    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class ReservationExpired:
    reservation_id: str
    estimate: Usage


@dataclass(frozen=True, slots=True)
class RunOpened:
    run_id: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    run_id: str
    reason: RunEndReason
    totals: Totals
    duration_s: float


@dataclass(frozen=True, slots=True)
class WindowRolledOver:
    policy: str
    ledger: str
    window_start: datetime
    window_end: datetime
    totals: Totals


@dataclass(frozen=True, slots=True)
class LedgerClosed:
    policy: str
    ledger: str
    reason: LedgerClosedReason
    totals: Totals


@dataclass(frozen=True, slots=True)
class PolicyChanged:
    name: str
    deleted: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """Events before `oldest_available_seq` are no longer retained and were skipped."""

    oldest_available_seq: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """A payload this client cannot read (a newer budgetd): `field` is its name on the
    wire, or "" when even that is unknown here. Upgrade budgetd_client to read it."""

    field: str


Payload = (
    UsageRecorded
    | ThresholdCrossed
    | Denied
    | LedgerExhausted
    | ReservationExpired
    | RunOpened
    | RunEnded
    | WindowRolledOver
    | LedgerClosed
    | PolicyChanged
    | Gap
    | Unknown
)


@dataclass(frozen=True, slots=True)
class Event:
    """One event: strictly increasing `seq` (resume point), server time, the subject's
    labels and what happened."""

    seq: int
    kind: EventKind
    at: datetime
    labels: Mapping[str, str]
    payload: Payload
