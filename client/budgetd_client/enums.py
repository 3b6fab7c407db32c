"""The contract's enums as Python enums, named like the proto in lower case.

`Decision.allow` is `DECISION_ALLOW` on the wire; the value of each member is its name, so
they print and serialise readably. Translation to and from wire numbers goes by name
through the proto's descriptor, so a renumbered proto cannot silently mismatch.
`LedgerState` and `Severity` are ordered like the proto says ("each value is more severe
than the one before"): `state >= LedgerState.warning` works.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

from budgetd_client.errors import BudgetdError
from budgetd_client.v1 import budget_pb2 as pb

E = TypeVar("E", bound=enum.Enum)


class Decision(enum.Enum):
    allow = "allow"
    allow_with_warning = "allow_with_warning"
    deny = "deny"


class _Ordered(enum.Enum):
    """Members compare by declaration order (least severe first)."""

    @property
    def rank(self) -> int:
        return list(type(self)).index(self)

    def __lt__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.rank >= other.rank


class LedgerState(_Ordered):
    ok = "ok"
    warning = "warning"
    critical = "critical"
    final = "final"
    exhausted = "exhausted"


class Severity(_Ordered):
    warning = "warning"
    critical = "critical"
    final = "final"


class Dimension(enum.Enum):
    total_tokens = "total_tokens"
    input_tokens = "input_tokens"
    output_tokens = "output_tokens"
    cost_micro_usd = "cost_micro_usd"
    requests = "requests"
    concurrency = "concurrency"
    run_duration_ms = "run_duration_ms"
    wall_clock_ms = "wall_clock_ms"


class Enforcement(enum.Enum):
    hard = "hard"
    soft = "soft"
    shadow = "shadow"


class RunEndReason(enum.Enum):
    closed = "closed"
    heartbeat_timeout = "heartbeat_timeout"
    duration_exceeded = "duration_exceeded"


class LedgerClosedReason(enum.Enum):
    reset = "reset"
    evicted = "evicted"
    run_closed = "run_closed"
    policy_deleted = "policy_deleted"
    policy_changed = "policy_changed"
    idle = "idle"


class EventKind(enum.Enum):
    usage_recorded = "usage_recorded"
    threshold_crossed = "threshold_crossed"
    denied = "denied"
    ledger_exhausted = "ledger_exhausted"
    reservation_expired = "reservation_expired"
    run_opened = "run_opened"
    run_ended = "run_ended"
    window_rolled_over = "window_rolled_over"
    ledger_closed = "ledger_closed"
    policy_changed = "policy_changed"
    gap = "gap"
    # Not on the wire: an event whose payload this client does not know (a newer
    # budgetd); delivered rather than ending the stream. Cannot be subscribed to.
    unknown = "unknown"


# Python enum -> (proto enum name, prefix of its value names).
_WIRE_ENUMS: dict[type[enum.Enum], tuple[str, str]] = {
    Decision: ("Decision", "DECISION_"),
    LedgerState: ("LedgerState", "LEDGER_STATE_"),
    Severity: ("Severity", "SEVERITY_"),
    Dimension: ("Dimension", "DIMENSION_"),
    Enforcement: ("Enforcement", "ENFORCEMENT_"),
    RunEndReason: ("RunEndReason", "RUN_END_REASON_"),
    LedgerClosedReason: ("LedgerClosedReason", "LEDGER_CLOSED_REASON_"),
    EventKind: ("EventKind", "EVENT_KIND_"),
}


def _tables() -> tuple[dict[enum.Enum, str], dict[type[enum.Enum], dict[int, enum.Enum]]]:
    names: dict[enum.Enum, str] = {}
    from_wire: dict[type[enum.Enum], dict[int, enum.Enum]] = {}
    for kind, (proto_name, prefix) in _WIRE_ENUMS.items():
        values = pb.DESCRIPTOR.enum_types_by_name[proto_name].values_by_name
        from_wire[kind] = {}
        for member in kind:
            name = prefix + member.name.upper()
            if member is EventKind.unknown:  # not on the wire
                continue
            names[member] = name
            from_wire[kind][values[name].number] = member
    return names, from_wire


_WIRE_NAMES, _FROM_WIRE = _tables()


def wire_name(member: enum.Enum) -> str:
    """The proto value name of `member` (protobuf accepts names wherever numbers go)."""
    return _WIRE_NAMES[member]


def from_wire(kind: type[E], number: int) -> E:
    """The member of `kind` a proto number stands for.

    UNSPECIFIED or a number this client does not know (a newer server) is an error rather
    than a guess: a wrong decision or state would be worse than a clear failure.
    """
    member = _FROM_WIRE[kind].get(number)
    if member is None:
        raise BudgetdError(
            f"the server sent {kind.__name__} value {number}, unknown to this client "
            "(a newer budgetd? upgrade budgetd_client)"
        )
    return member  # type: ignore[return-value]
