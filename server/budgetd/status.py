"""The one table from core errors to gRPC status codes.

Every servicer method funnels its core call through `status_of`: a caller learns the
field and the rule (INVALID_ARGUMENT), what was missing (NOT_FOUND), what clashed
(ALREADY_EXISTS), which server bound was hit (RESOURCE_EXHAUSTED), that the daemon
cannot take the call now (UNAVAILABLE: starting, disk trouble) or in its configuration
(FAILED_PRECONDITION), that this caller may not (PERMISSION_DENIED). Anything else is a
bug: it is logged with its traceback here and the caller gets INTERNAL with no details.
"""

from __future__ import annotations

import logging

import grpc

from budgetd.core import Conflict, InvalidArgument, LimitReached, NotFound
from budgetd.errors import FailedPrecondition, PermissionDenied, Unavailable

log = logging.getLogger("budgetd.service")

STATUS: dict[type[Exception], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    LimitReached: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


# Messages quote the caller's input; status details travel as metadata, which gRPC
# caps (8 KiB soft, 16 KiB hard), so a long quote would turn any error into a
# transport failure. The field and rule come first and survive the cut.
MAX_DETAILS_CHARS = 512


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and message a caller sees for `error`."""
    for kind, code in STATUS.items():
        if isinstance(error, kind):
            message = str(error)
            if len(message) > MAX_DETAILS_CHARS:
                message = message[: MAX_DETAILS_CHARS - 20] + " ... (truncated)"
            return code, message
    log.error("internal error", exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error (logged by the server)"
