"""One debug line per call: method, status, duration and request id.

A server interceptor, installed only at `--log-level debug` (it costs a wrapper per
call), so no servicer method has to log. Streams are logged when they end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from budgetd.logs import fields

log = logging.getLogger("budgetd.calls")
Context = grpc.aio.ServicerContext[Any, Any]


def _status(context: Context, error: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name  # set by an abort
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


def _line(method: str, context: Context, began: float, request: Any, error: Any) -> None:
    log.debug(
        "call",
        extra=fields(
            method=method,
            status=_status(context, error),
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
        method = details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _unary_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _stream_stream(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _unary(method: str, inner: Any) -> Any:
    async def call(request: Any, context: Context) -> Any:
        began, error = time.perf_counter(), None
        try:
            return await inner(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            _line(method, context, began, request, error)

    return call


def _unary_stream(method: str, inner: Any) -> Any:
    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        async for item in _streamed(method, inner, request, request, context):
            yield item

    return call


def _stream_stream(method: str, inner: Any) -> Any:
    async def call(requests: Any, context: Context) -> AsyncIterator[Any]:
        async for item in _streamed(method, inner, requests, None, context):
            yield item

    return call


async def _streamed(
    method: str, inner: Any, argument: Any, request: Any, context: Context
) -> AsyncIterator[Any]:
    """A streaming handler's answers, logged when it ends (it may also write with
    context.write and return, as the health Watch does)."""
    began, error = time.perf_counter(), None
    try:
        result = inner(argument, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:
            await result
    except BaseException as raised:
        error = raised
        raise
    finally:
        _line(method, context, began, request, error)
