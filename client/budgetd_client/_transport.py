"""The channel, the stubs and the retry loop, for the sync and the asyncio client.

A unary call is tried once, then retried after a backoff while it fails with a retryable
status (see `budgetd_client.retry`), at most `retries` times. The request object, and so
its `request_id`, is the same on every attempt. What is finally raised is typed
(`budgetd_client.errors`), with the `grpc.RpcError` as its cause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc
from budgetd_client._core import Settings
from budgetd_client.errors import from_rpc_error
from budgetd_client.retry import RETRYABLE


def _give_up(settings: Settings, error: grpc.RpcError, attempt: int) -> bool:
    return error.code() not in RETRYABLE or attempt >= settings.retries


class Transport:
    """Blocking calls over `grpc.insecure_channel` (thread-safe, like the channel)."""

    def __init__(self, settings: Settings, interceptors: Sequence[grpc.Interceptor] = ()) -> None:
        self.settings = settings
        channel = grpc.insecure_channel(settings.target, options=settings.channel_options)
        self._channel = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        self._stub = rpc.BudgetServiceStub(self._channel)

    def unary(self, method: str, request: Message) -> Any:
        invoke = getattr(self._stub, method)
        attempt = 0
        while True:
            try:
                return invoke(request, timeout=self.settings.timeout_s)
            except grpc.RpcError as error:
                if _give_up(self.settings, error, attempt):
                    raise from_rpc_error(error, self.settings.target, attempt + 1) from error
            time.sleep(self.settings.backoff.delay(attempt))
            attempt += 1

    def subscribe(self, request: pb.SubscribeRequest) -> Any:
        """The stream call (no deadline: it lives as long as the subscriber wants)."""
        return self._stub.Subscribe(request)

    def close(self) -> None:
        self._channel.close()


class AsyncTransport:
    """Awaitable calls over `grpc.aio.insecure_channel`.

    A grpc.aio channel belongs to the event loop it is created in, so it is created on
    first use, inside the caller's loop, not in the constructor.
    """

    def __init__(
        self, settings: Settings, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
    ) -> None:
        self.settings = settings
        self._interceptors = list(interceptors)
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    @property
    def stub(self) -> Any:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.settings.target,
                options=self.settings.channel_options,
                interceptors=self._interceptors or None,
            )
            self._stub = rpc.BudgetServiceStub(self._channel)
        return self._stub

    async def unary(self, method: str, request: Message) -> Any:
        invoke = getattr(self.stub, method)
        attempt = 0
        while True:
            try:
                return await invoke(request, timeout=self.settings.timeout_s)
            except grpc.RpcError as error:
                if _give_up(self.settings, error, attempt):
                    raise from_rpc_error(error, self.settings.target, attempt + 1) from error
            await asyncio.sleep(self.settings.backoff.delay(attempt))
            attempt += 1

    def subscribe(self, request: pb.SubscribeRequest) -> Any:
        return self.stub.Subscribe(request)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None
