"""`rpc.server.call.duration`: every call timed, streams included, refused ones too.

Each method's handler is wrapped once when the server registers it, outside the auth
gate (`budgetd.auth.gate.Registrar`): the interceptor's job without grpc.aio's per-call
interceptor chain, so a call costs the wrapper's frame, two clock reads and a bucket
increment. The status is what the call ended with: an abort's code, OK, CANCELLED for a
call cancelled under it, UNKNOWN for anything else escaping.
"""

from __future__ import annotations

import logging
import time
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


class _Method:
    """One method's timings: the OK series held once made, others looked up."""

    __slots__ = ("name", "ok", "recorder")

    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder = recorder
        self.name = name
        self.ok: Timing | None = None  # made at the first OK call: no empty series

    def done(
        self, context: Context, error: BaseException | None, began: float, request: object
    ) -> None:
        elapsed = time.perf_counter() - began
        try:  # runs in the call's `finally`: it must never change how the call ends
            code = status_name(context, error)
            if code == "OK":
                series = self.ok
                if series is None:
                    series = self.ok = self.recorder.rpc_series(self.name, code)
            else:
                series = self.recorder.rpc_series(self.name, code)
            series.buckets.record(elapsed)
        except Exception:
            log.exception("rpc duration not recorded", extra=fields(method=self.name))


class RpcMetrics:
    """Wraps each method's handler once, when the server registers it (`Registrar`)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def wrap(self, method: str, handler: Handler) -> Handler:
        return timed(handler, _Method(self.recorder, method.lstrip("/")).done)
