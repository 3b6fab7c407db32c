"""`rpc.server.call.duration`: a server interceptor timing every call, streams included.

The wrapped handler is made once per method (the server hands the same handler for a
method every time), so a call costs the wrapper's frame, two clock reads and a bucket
increment. The status is what the call ended with: an abort's code, OK, CANCELLED for a
call cancelled under it, UNKNOWN for anything else escaping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from budgetd.logs import fields
from budgetd.telemetry.recorder import Recorder
from budgetd.telemetry.series import Timing

Context = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger("budgetd.telemetry")

if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor


def _code(context: Context, error: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


class _Method:
    """One method's timings: the OK series held directly, others looked up."""

    __slots__ = ("name", "ok", "recorder")

    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder = recorder
        self.name = name
        self.ok: Timing = recorder.rpc_series(name, "OK")

    def done(self, context: Context, error: BaseException | None, began: float) -> None:
        elapsed = time.perf_counter() - began
        try:  # runs in the call's `finally`: it must never change how the call ends
            code = _code(context, error)
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
        wrapped = _wrap(handler, _Method(self.recorder, method.lstrip("/")))
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(handler: Handler, method: _Method) -> Handler:
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, method), **serializers
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, method), **serializers
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, method), **serializers
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, method), **serializers
        )
    return handler


def _unary(inner: Any, method: _Method) -> Any:
    async def call(request: Any, context: Context) -> Any:
        began, error = time.perf_counter(), None
        try:
            return await inner(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            method.done(context, error, began)

    return call


def _streaming(inner: Any, method: _Method) -> Any:
    async def call(argument: Any, context: Context) -> AsyncIterator[Any]:
        began, error = time.perf_counter(), None
        try:
            result = inner(argument, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:  # a handler that writes with context.write and returns (health Watch)
                await result
        except BaseException as raised:
            error = raised
            raise
        finally:
            method.done(context, error, began)

    return call
