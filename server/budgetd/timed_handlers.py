"""A method handler wrapped so a callback hears how each call ended: the one wrapper the
debug call log (an interceptor) and the RPC duration metric (wrapped at registration)
share.

`ended(context, error, began, request)` runs in the call's `finally`: `error` is what
escaped (None on success), `began` the `time.perf_counter()` at the start, `request` the
request of a unary-request call (None when requests stream). Streams end when the
handler does (it may also write with `context.write` and return, as the health Watch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Ended = Callable[[Context, BaseException | None, float, Any], None]

if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]


def status_name(context: Context, error: BaseException | None) -> str:
    """How a call ended: an abort's code, OK, CANCELLED when cancelled under it,
    UNKNOWN for anything else that escaped."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name  # set by an abort
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


def timed(handler: Handler, ended: Ended) -> Handler:
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, ended, True), **serializers
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, ended, True), **serializers
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, ended, False), **serializers
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, ended, False), **serializers
        )
    return handler


def _unary(inner: Any, ended: Ended, unary_request: bool) -> Any:
    async def call(argument: Any, context: Context) -> Any:
        began, error = time.perf_counter(), None
        try:
            return await inner(argument, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            ended(context, error, began, argument if unary_request else None)

    return call


def _streaming(inner: Any, ended: Ended, unary_request: bool) -> Any:
    async def call(argument: Any, context: Context) -> AsyncIterator[Any]:
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
            ended(context, error, began, argument if unary_request else None)

    return call
