"""The standard gRPC health service (`grpc.health.v1.Health`), owned by budgetd.

The stock asyncio servicer holds a lock while it writes to a watcher and checks its
shutdown flag afterwards, so a drain that begins during that write is never reported:
the watch ends on SERVING. Here every status change happens in one synchronous step
(no awaits), and a watch compares what it last *wrote* with the current status before
it decides to end, so a Watch open at the drain always reports NOT_SERVING before it
ends — and then ends, so it does not hold the drain for the whole grace period.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ServingStatus = int  # a HealthCheckResponse.ServingStatus value
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
Context = grpc.aio.ServicerContext[Any, Any]
# The link to Redis of global policies ([global]): a name of its own, so a Redis outage
# degrades global policies without turning the whole daemon NOT_SERVING.
GLOBAL_SERVICE = "budgetd.global"


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped stubs
    """Statuses by service name ("" = the whole server), Check, Watch and a drain."""

    def __init__(self) -> None:
        self._status: dict[str, ServingStatus] = {"": NOT_SERVING}
        self._changed = asyncio.Event()  # replaced (after being set) on every change
        self.draining = False
        self._watches = 0  # open Watch calls
        self._no_watches = asyncio.Event()
        self._no_watches.set()

    def status(self, service: str) -> ServingStatus | None:
        return self._status.get(service)

    def set(self, service: str, status: ServingStatus) -> None:
        """Set one service's status; ignored once draining (the drain is final)."""
        if self.draining or self._status.get(service) == status:
            return
        self._status[service] = status
        self._notify()

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; open watches report it, then end."""
        if self.draining:
            return
        self.draining = True
        for service in self._status:
            self._status[service] = NOT_SERVING
        self._notify()

    async def watches_ended(self) -> None:
        """Return once no Watch is open. After `enter_graceful_shutdown` every watch
        writes NOT_SERVING and ends, so the drain awaits this before it stops the
        server: each watcher's last status and the end of its stream are on the wire
        before the server's GOAWAY and the close of the connection."""
        await self._no_watches.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Check(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthListRequest, context: Context
    ) -> health_pb2.HealthListResponse:
        """Every service's status (a handful: the server and its services by name)."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._status.items()
            }
        )

    async def Watch(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> None:
        self._watches += 1
        self._no_watches.clear()
        try:
            await self._watch(request.service, context)
        finally:
            self._watches -= 1
            if self._watches == 0:
                self._no_watches.set()

    async def _watch(self, service: str, context: Context) -> None:
        written: ServingStatus | None = None
        while True:
            # Read status, flag and the change signal together, before any await: a
            # change during the write below sets this `changed`, so it is not missed.
            changed = self._changed
            status = self._status.get(service, SERVICE_UNKNOWN)
            draining = self.draining
            if status != written:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                written = status
            if draining:
                return  # what was written is the drain's final status
            await changed.wait()
