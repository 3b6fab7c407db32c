"""The typed errors of the core: the only exceptions an operation raises on purpose.

Each maps to one gRPC status code in the service layer (one table, there). A budget
denial is not an error: it is a `Decision` in a result.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr


class BudgetError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidArgument(BudgetError):
    """A request broke a rule; `field` names the part, `rule` says what was expected."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(BudgetError):
    """The request names a reservation, run, ledger or policy that does not exist."""

    def __init__(self, kind: str, name: str, hint: str = "") -> None:
        message = f"{kind} {name!r} not found"
        super().__init__(f"{message}: {hint}" if hint else message)
        self.kind = kind
        self.name = name


class Conflict(BudgetError):
    """The request is well formed but contradicts the current state (e.g. a reused id)."""


class LimitReached(BudgetError):
    """A server bound was hit (ledgers, reservations, runs, policies): try again later."""

    def __init__(self, limit: str, value: int, detail: str = "") -> None:
        message = f"server limit {limit}={value} reached"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.limit = limit
        self.value = value


# A native (compiled) class cannot derive from a built-in exception other than Exception.
@mypyc_attr(native_class=False)
class InvariantBroken(AssertionError):
    """A programming error: the core's own bookkeeping disagrees with itself."""


def invariant(condition: bool, message: str) -> None:
    """Check an internal invariant; unlike `assert`, survives `python -O`."""
    if not condition:
        raise InvariantBroken(message)
