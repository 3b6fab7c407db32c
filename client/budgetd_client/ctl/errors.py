"""Exit codes and the one error type budgetctl raises on purpose.

Scripts branch on the exit code, so each failure a caller can act on has its own number;
the message is for humans and is printed as one line on stderr by `cli.main`.
"""

from __future__ import annotations

from enum import IntEnum

import grpc


class Exit(IntEnum):
    """budgetctl's exit codes (also listed in `--help`)."""

    OK = 0
    ERROR = 1  # unexpected: a bug, or a status no other code covers
    USAGE = 2  # bad command line (argparse's own code), unreadable file
    UNAVAILABLE = 3  # daemon not reachable, starting, draining, or no answer in time
    NOT_FOUND = 4  # ledger or policy unknown
    INVALID = 5  # the daemon said INVALID_ARGUMENT, or the policy file is invalid
    EXHAUSTED = 6  # RESOURCE_EXHAUSTED (a server bound) or ALREADY_EXISTS
    INTERRUPTED = 130  # Ctrl-C (except in `watch`, where Ctrl-C is the normal way out)


class CtlError(Exception):
    """A failure with a message for the user and the exit code scripts see."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def from_rpc(error: grpc.RpcError, target: str, timeout: float) -> CtlError:
    """The exit code and one-line message for a failed call (details on one line)."""
    if not isinstance(error, grpc.Call):  # every sync stub error is a Call; be safe
        return CtlError(Exit.ERROR, f"call failed: {error}")
    code = error.code()
    details = " ".join((error.details() or "").split())
    if code is grpc.StatusCode.UNAVAILABLE:
        if details.startswith("failed to connect"):  # gRPC's long form: keep the cause
            details = "cannot connect: " + details.rsplit("error: ", 1)[-1]
        return CtlError(
            Exit.UNAVAILABLE,
            f"daemon unavailable at {target}: {details} "
            "(is budgetd running? set --target or BUDGETD_TARGET)",
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return CtlError(Exit.UNAVAILABLE, f"no answer from {target} within {timeout:g}s")
    if code is grpc.StatusCode.NOT_FOUND:
        return CtlError(Exit.NOT_FOUND, details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return CtlError(Exit.INVALID, f"invalid argument: {details}")
    if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ALREADY_EXISTS):
        return CtlError(Exit.EXHAUSTED, details)
    return CtlError(Exit.ERROR, f"{code.name.lower()}: {details}")
