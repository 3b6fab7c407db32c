"""Who is calling: a role, where it came from, an optional label scope and a rate.

A `Caller` is built once per identity (a token, a uid, a certificate) when the
configuration is read, never per call: the gate hands the same object to every call of
that identity, so checking a call allocates nothing.
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from budgetd.errors import PermissionDenied


class Role(enum.Enum):
    """What a caller may do (`budgetd.auth.methods` says which RPCs each role may call)."""

    AGENT = "agent"  # BudgetService: spend, runs, and reads of its own ledgers
    READER = "reader"  # get / list / subscribe, policies and server info; never spends
    ADMIN = "admin"  # everything: BudgetAdminService and all reads


ROLE_NAMES = tuple(role.value for role in Role)


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: `per_second` sustained, `burst` at once."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Caller:
    """One identity. `role` None: known (or not) but allowed nothing beyond the open
    services; `authenticated` says whether it proved who it is (UNAUTHENTICATED when it
    did not, PERMISSION_DENIED when it did but its role does not allow the call).

    `name` is what errors and logs call it ("token 'acme-agents'", "uid 1001"); `rule`
    is the configuration key that gave it its role, or that it lacked."""

    name: str
    role: Role | None
    rule: str
    scope_items: tuple[tuple[str, str], ...] = ()  # () = unscoped
    rate: Rate | None = None  # None: never rate-limited
    authenticated: bool = True
    key: str = field(default="", compare=False)  # the rate bucket's key

    @property
    def scope(self) -> Mapping[str, str] | None:
        """The labels every ledger, event and request of this caller must carry, or
        None when it is not scoped."""
        return MappingProxyType(dict(self.scope_items)) if self.scope_items else None

    def sees(self, labels: Mapping[str, str]) -> bool:
        """Whether something with these labels (a ledger's labels: its policy's match
        equalities and its `per` values; an event's or a run's labels) is inside the
        scope. An unscoped caller sees everything."""
        for key, value in self.scope_items:  # noqa: SIM110 - no generator per call
            if labels.get(key) != value:
                return False
        return True

    def narrow(self, selector: Mapping[str, str]) -> dict[str, str] | None:
        """`selector` with the scope added, for a list or a subscription: what it
        selects is then inside the scope. None when the selector asks for another
        value of a scoped key: such a request selects nothing this caller may see."""
        narrowed = dict(selector)
        for key, value in self.scope_items:
            asked = narrowed.get(key)
            if asked is not None and asked not in (value, "*"):
                return None
            narrowed[key] = value
        return narrowed

    def scope_violation(self, labels: Mapping[str, str], where: str = "labels") -> str | None:
        """Why these request labels are outside the scope (naming this caller's own rule,
        never another tenant), or None when they are inside it."""
        for key, value in self.scope_items:
            if labels.get(key) != value:
                return (
                    f"{self.name} is scoped to {_shown(self.scope_items)} ({self.rule}): "
                    f"{where}.{key} must be {value!r}"
                )
        return None

    def require_inside(self, labels: Mapping[str, str], where: str = "labels") -> None:
        """Raise PermissionDenied (naming the rule) unless the labels are inside the scope:
        for a spend the gate cannot see, e.g. one ConsumeStream message."""
        violation = self.scope_violation(labels, where)
        if violation is not None:
            raise PermissionDenied(violation)


def _shown(items: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in items)


# The daemon's own user on its owner-only socket, and any call served without a gate.
UNRESTRICTED = Caller("the daemon's own user", Role.ADMIN, "owner of the Unix socket")

# Set by the gate for the task of each call it lets through (a call is one task, so the
# value never leaks into another call); unset means the call was not gated.
_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "budgetd_caller", default=UNRESTRICTED
)


def caller_of(context: object = None) -> Caller:
    """The caller of the call being served.

    `context` is the call's `ServicerContext`, accepted so call sites read naturally;
    the caller itself is kept per call by the gate (each call runs in its own task).
    On a server built without a gate (the owner-only socket, the service tests' server)
    every caller is `UNRESTRICTED`: an unscoped admin."""
    del context
    return _CALLER.get()


def set_caller(caller: Caller) -> None:
    """For the gate: the caller of the current call (its task)."""
    _CALLER.set(caller)
