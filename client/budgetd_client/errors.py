"""Typed exceptions: what went wrong, in terms an agent can act on.

A budget denial is not a transport error, so `BudgetExhausted` is raised by the SDK itself
(from a DENY answer of `reserve` or `open_run`; `check` returns the decision instead). The
others map a gRPC status: the server's message, which names the field and the rule, is
kept as the exception's message, and the original `grpc.RpcError` is the `__cause__`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from budgetd_client.enums import Dimension
    from budgetd_client.models import Blocker


class BudgetdError(Exception):
    """Base of every error the SDK raises; `code` is the gRPC status, when there was one.

    `request_id` is the idempotency key of the mutating call that failed (None for reads
    and for misuse caught before a request existed): retrying with `request_id=` that id
    is safe, the daemon answers a repeat from memory and counts nothing twice.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id: str | None = None


class BudgetExhausted(BudgetdError):
    """A HARD cap denied a `reserve` or `open_run`; nothing was held or opened.

    The first blocker's fields are copied onto the exception for the common case of one
    blocking ledger; `blockers` has every one of them.
    """

    def __init__(self, blockers: Sequence[Blocker]) -> None:
        if not blockers:
            raise ValueError("BudgetExhausted needs at least one blocker")
        self.blockers: tuple[Blocker, ...] = tuple(blockers)
        first = self.blockers[0]
        self.policy: str = first.policy
        self.ledger: str = first.ledger
        self.dimension: Dimension = first.dimension
        self.used: int = first.used
        self.limit: int = first.limit
        # When a retry can succeed by waiting: the latest time any blocker comes back;
        # None when one of them does not come back by time alone (a lifetime cap,
        # concurrency, reservations holding it, an estimate that has no price).
        backs = [b.resets_at for b in self.blockers]
        self.resets_at: datetime | None = (
            None if any(at is None for at in backs) else max(at for at in backs if at)
        )
        more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
        if first.unpriced:
            detail = f"model {first.model!r} has no price and the cost cap denies unpriced use"
        else:
            detail = (
                f"used {first.used} + reserved {first.reserved} + requested {first.requested}"
                f" > limit {first.limit}"
            )
        when = f"; comes back at {self.resets_at.isoformat()}" if self.resets_at else ""
        super().__init__(
            f"budget exhausted: {first.ledger} {first.dimension.value}: {detail}{more}{when}"
        )


class InvalidRequest(BudgetdError):
    """INVALID_ARGUMENT: the request broke a rule of the contract (the message says which)."""


class NotFound(BudgetdError):
    """NOT_FOUND: no such reservation, run or ledger (or it already ended)."""


class AlreadyExists(BudgetdError):
    """ALREADY_EXISTS: e.g. a run with this id is open, or a request_id was used for
    another kind of call."""


class ServerBusy(BudgetdError):
    """RESOURCE_EXHAUSTED: a server bound was hit (ledgers, reservations, runs, streams,
    message size); not a budget decision."""


class BudgetdUnavailable(BudgetdError):
    """The daemon did not answer (UNAVAILABLE or DEADLINE_EXCEEDED after every retry) and
    the client fails closed (`on_unavailable="deny"`), or the call has no offline answer.

    `attempts` is how many times the request was sent: 0 when the client did not even try
    (it found the daemon unreachable moments ago, see `offline_recheck_s`)."""

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, attempts: int = 0
    ) -> None:
        super().__init__(message, code)
        self.attempts = attempts


class Unauthenticated(BudgetdError):
    """UNAUTHENTICATED: the daemon does not know who is calling: no token (or client
    certificate) where one is needed, or a token no token file lists (a typo, or one
    removed by a reload). Never retried: the same credentials get the same answer."""


class PermissionDenied(BudgetdError):
    """PERMISSION_DENIED: the daemon knows the caller, and its role or label scope does
    not allow this call (a reader's Consume, labels outside a scoped token's scope).
    Never retried."""


class CredentialsError(BudgetdError, ValueError):
    """The client's own credentials cannot be used: a token or TLS file that is missing,
    unreadable or not what it should be (`path` names it), contradicting options, or a
    token that would go in plaintext beyond loopback. Raised when the client is made,
    before anything is sent; a ValueError too, like the constructor's other checks."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class ClientClosed(BudgetdError):
    """A call on a client after its `close()`: a closed client is never reopened."""


class WrongEventLoop(BudgetdError):
    """An `AsyncBudgetClient` used from another event loop than the one it was first used
    in: its channel belongs to that loop. Use one client per event loop."""


_BY_CODE: dict[grpc.StatusCode, type[BudgetdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusy,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: BudgetdUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: BudgetdUnavailable,
}


def from_rpc_error(error: grpc.RpcError, target: str, attempts: int = 1) -> BudgetdError:
    """The typed exception for a failed call (raise it `from error`)."""
    code = error.code()
    details = error.details() or code.name
    kind = _BY_CODE.get(code, BudgetdError)
    if kind is BudgetdUnavailable:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        details = f"budgetd at {target} did not answer{tries} ({code.name}): {details}"
        return BudgetdUnavailable(details, code, attempts)
    if kind is BudgetdError:
        details = f"{code.name}: {details}"
    elif kind is Unauthenticated:
        details = f"budgetd at {target} does not know this caller: {details}"
    return kind(details, code)
