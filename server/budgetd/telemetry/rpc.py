"""`rpc.server.call.duration`: a server interceptor timing every call, streams included.

The wrapped handler is made once per method (the server hands the same handler for a
method every time), so a call costs the wrapper's frame, two clock reads and a bucket
increment. The status is what the call ended with: an abort's code, OK, CANCELLED for a
call cancelled under it, UNKNOWN for anything else escaping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from budgetd.logs import fields
from budgetd.telemetry.recorder import Recorder
from budgetd.telemetry.series import Timing
from budgetd.timed_handlers import status_name, timed

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger("budgetd.telemetry")

if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor


class _Method:
    """One method's timings: the OK series held directly, others looked up."""

    __slots__ = ("name", "ok", "recorder")

    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder = recorder
        self.name = name
        self.ok: Timing = recorder.rpc_series(name, "OK")

    def done(
        self, context: Context, error: BaseException | None, began: float, request: object
    ) -> None:
        elapsed = time.perf_counter() - began
        try:  # runs in the call's `finally`: it must never change how the call ends
            code = status_name(context, error)
            series = self.ok if code == "OK" else self.recorder.rpc_series(self.name, code)
            series.buckets.record(elapsed)
        except Exception:
            log.exception("rpc duration not recorded", extra=fields(method=self.name))


class RpcMetrics(Interceptor):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:  # not a method of this server: gRPC answers UNIMPLEMENTED
            return handler
        method = details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = timed(handler, _Method(self.recorder, method.lstrip("/")).done)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
