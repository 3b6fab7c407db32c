"""Mutable bookkeeping records of the engine: holds (reservations) and runs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from budgetd.core.digest import Remembrance
from budgetd.core.dimensions import VECTOR_SIZE
from budgetd.core.events import RunEndReason
from budgetd.core.ledger import Ledger
from budgetd.core.policy import Enforcement
from budgetd.core.results import Result
from budgetd.core.usage import Usage


@dataclass(slots=True)
class Reservation:
    """An estimate held in every ledger the request matched, until commit, release or ttl."""

    id: str
    labels: Mapping[str, str]
    estimate: Usage
    amounts: tuple[int, ...]  # held per dimension (HELD_SIZE)
    # The ledger objects holding it: a ledger closed meanwhile is dead (`alive` False)
    # and skipped, even if a new ledger with the same key has been created since.
    ledgers: tuple[Ledger, ...]
    expires_at: float
    run_id: str
    created_at: float
    epoch: int  # the engine's policy epoch when granted
    subject: Mapping[str, str]  # labels plus the estimate's model and provider


class ExpiredHold(NamedTuple):
    """What a late Commit needs to record the usage of a hold that has expired."""

    labels: Mapping[str, str]
    run_id: str
    estimate: Usage
    expired_at: float


@dataclass(slots=True)
class Deadline:
    """A run_duration cap a run is subject to; hard ones end the run, others report once."""

    at: float
    policy: str
    ledger: str
    limit_ms: int
    enforcement: Enforcement
    reported: bool = False  # a soft or shadow cap's Denied event has been emitted


@dataclass(slots=True)
class Run:
    """An agent's task: a concurrency slot in every matching ledger, bounded in time."""

    id: str
    labels: Mapping[str, str]
    opened_at: float
    ttl_s: float
    last_seen: float
    ledgers: tuple[Ledger, ...]  # where the run holds a slot (dead ones are skipped)
    deadlines: list[Deadline]  # sorted by time; hard ones end the run
    totals: list[int] = field(default_factory=lambda: [0] * VECTOR_SIZE)
    first_use: float | None = None
    last_use: float | None = None

    @property
    def hard_deadline(self) -> Deadline | None:
        return next((d for d in self.deadlines if d.enforcement is Enforcement.HARD), None)

    @property
    def expires_at(self) -> float:
        """When the sweep ends the run: its heartbeat timeout or its hard deadline."""
        hard = self.hard_deadline
        return min(self.last_seen + self.ttl_s, hard.at if hard else math.inf)

    def next_due(self) -> float:
        """The next instant the sweep has something to do for this run."""
        due = self.last_seen + self.ttl_s
        for deadline in self.deadlines:
            if not deadline.reported:
                return min(due, deadline.at)
        return due


class EndedRun(NamedTuple):
    """A remembered end, so a late call with the run's id gets a precise answer (and
    only a caller whose scope holds `labels` gets it)."""

    reason: RunEndReason
    at: float
    deadline: Deadline | None
    labels: Mapping[str, str]


class Remembered:
    """The stored answer to a request_id, returned again on a retry: its operation,
    when, the result, what the request was (see budgetd.core.digest) and the bytes it
    counts against limits.idempotency_max_bytes. A class rather than a tuple: up to a
    million are kept, and compiled its time and size are unboxed (80 bytes in all, a
    tuple with its float and int objects 160)."""

    __slots__ = ("at", "op", "remembered", "result", "size")

    def __init__(
        self, op: str, at: float, result: Result, remembered: Remembrance, size: int
    ) -> None:
        self.op = op
        self.at = at
        self.result = result
        self.remembered = remembered
        self.size = size
