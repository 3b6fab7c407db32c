"""One debug line per call: method, status, duration and request id.

A server interceptor, installed only at `--log-level debug` (it costs a wrapper per
call), so no servicer method has to log. Streams are logged when they end.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from budgetd.logs import fields
from budgetd.timed_handlers import status_name, timed

log = logging.getLogger("budgetd.calls")
Context = grpc.aio.ServicerContext[Any, Any]


def _line(method: str, context: Context, error: Any, began: float, request: Any) -> None:
    log.debug(
        "call",
        extra=fields(
            method=method,
            status=status_name(context, error),
            ms=round((time.perf_counter() - began) * 1000, 3),
            request_id=getattr(request, "request_id", "") or "-",
        ),
    )


if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor


class CallLog(Interceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:
            return handler
        return timed(handler, functools.partial(_line, details.method))
