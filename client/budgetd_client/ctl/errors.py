"""Exit codes and the one error type budgetctl raises on purpose.

Scripts branch on the exit code, so each failure a caller can act on has its own number;
the message is for humans and is printed as one line on stderr by `cli.main`. Every gRPC
status maps to one of these codes (`STATUS_EXITS`); 1 is kept for what nobody can act
on but the developers: a bug in budgetctl or an internal error in the daemon.
"""

from __future__ import annotations

from enum import IntEnum

import grpc


class Exit(IntEnum):
    """budgetctl's exit codes (also listed in `--help` and in the README)."""

    OK = 0
    ERROR = 1  # unexpected: a bug in budgetctl, or INTERNAL / UNKNOWN / DATA_LOSS
    USAGE = 2  # bad command line (argparse's own code), unreadable file
    UNAVAILABLE = 3  # daemon not reachable, starting, draining, or no answer in time
    NOT_FOUND = 4  # ledger or policy unknown
    INVALID = 5  # INVALID_ARGUMENT or OUT_OF_RANGE, or the policy file is invalid
    # Refused in the daemon's current state: RESOURCE_EXHAUSTED (a server bound),
    # ALREADY_EXISTS, FAILED_PRECONDITION or ABORTED.
    EXHAUSTED = 6
    NOT_ALLOWED = 7  # UNAUTHENTICATED or PERMISSION_DENIED
    UNSUPPORTED = 8  # UNIMPLEMENTED: an older budgetd, or not budgetd at --target
    INTERRUPTED = 130  # Ctrl-C (except in `watch`, where Ctrl-C is the normal way out)


# The exit code of each gRPC status; complete (a test checks every grpc.StatusCode).
STATUS_EXITS: dict[grpc.StatusCode, Exit] = {
    grpc.StatusCode.OK: Exit.ERROR,  # a failed call never has it: a bug if it does
    grpc.StatusCode.CANCELLED: Exit.UNAVAILABLE,  # the daemon ended the call (draining)
    grpc.StatusCode.UNKNOWN: Exit.ERROR,
    grpc.StatusCode.INVALID_ARGUMENT: Exit.INVALID,
    grpc.StatusCode.DEADLINE_EXCEEDED: Exit.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND: Exit.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: Exit.EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED: Exit.NOT_ALLOWED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Exit.EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION: Exit.EXHAUSTED,
    grpc.StatusCode.ABORTED: Exit.EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE: Exit.INVALID,
    grpc.StatusCode.UNIMPLEMENTED: Exit.UNSUPPORTED,
    grpc.StatusCode.INTERNAL: Exit.ERROR,
    grpc.StatusCode.UNAVAILABLE: Exit.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS: Exit.ERROR,
    grpc.StatusCode.UNAUTHENTICATED: Exit.NOT_ALLOWED,
}


class CtlError(Exception):
    """A failure with a message for the user and the exit code scripts see."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def exit_code(status: grpc.StatusCode) -> Exit:
    """The exit code of a failed call's status (1 only for a status nobody expects)."""
    return STATUS_EXITS.get(status, Exit.ERROR)


def from_rpc(error: grpc.RpcError, target: str, timeout: float) -> CtlError:
    """The exit code and one-line message for a failed call (details on one line)."""
    if not isinstance(error, grpc.Call):  # every sync stub error is a Call; be safe
        return CtlError(Exit.ERROR, f"call failed: {error}")
    status = error.code()
    return CtlError(exit_code(status), _message(status, error.details(), target, timeout))


# Statuses whose details already say what happened (`ledger 'x' not found`).
_SELF_EXPLAINED = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


def _message(status: grpc.StatusCode, details: str | None, target: str, timeout: float) -> str:
    details = " ".join((details or "").split())
    if status is grpc.StatusCode.UNAVAILABLE:
        if details.startswith("failed to connect"):  # gRPC's long form: keep the cause
            details = "cannot connect: " + details.rsplit("error: ", 1)[-1]
        return (
            f"daemon unavailable at {target}: {details} "
            "(is budgetd running? set --target or BUDGETD_TARGET)"
        )
    if status is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {target} within {timeout:g}s"
    if status is grpc.StatusCode.CANCELLED:
        return f"the daemon at {target} cancelled the call: {details}"
    if status is grpc.StatusCode.UNIMPLEMENTED:
        return (
            f"the server at {target} does not implement this call "
            f"(an older budgetd, or not budgetd): {details}"
        )
    if status is grpc.StatusCode.UNAUTHENTICATED:
        return (
            f"unauthenticated: {details} (a TCP listener needs a token: --token-file, "
            "--token or $BUDGETD_TOKEN; or a client certificate: --tls-cert and --tls-key)"
        )
    if status in _SELF_EXPLAINED:
        return details
    return f"{status.name.lower().replace('_', ' ')}: {details}"
