"""The gRPC server of budgetd, without listeners: both services, health, reflection."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio  # what `health.aio` names, typed
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from budgetd.service import BudgetAdminService, BudgetService, Runtime
from budgetd.v1 import budget_pb2, budget_pb2_grpc

MAX_CONCURRENT_RPCS = 10_000
UNKNOWN_SERVICE = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVICE_NAMES = (
    budget_pb2.DESCRIPTOR.services_by_name["BudgetService"].full_name,
    budget_pb2.DESCRIPTOR.services_by_name["BudgetAdminService"].full_name,
)


class DrainingHealth(health_aio.HealthServicer):  # type: ignore[misc]  # untyped package
    """The stock health servicer, except that a Watch ends once it has reported the
    drain's NOT_SERVING: an open watch (gRPC client-side health checking keeps one)
    would otherwise count as a call in flight and hold the drain for the whole grace."""

    async def Watch(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        service = request.service
        condition = self._server_watchers[service]
        self._watcher_count_by_service[service] += 1
        last = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(service, UNKNOWN_SERVICE)
                    if status != last:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                        last = status
                    if self._gracefully_shutting_down:
                        return
                    await condition.wait()
        finally:
            self._watcher_count_by_service[service] -= 1
            if self._watcher_count_by_service[service] == 0:
                del self._server_watchers[service]
                del self._watcher_count_by_service[service]


def build_server(
    runtime: Runtime, max_message_bytes: int
) -> tuple[grpc.aio.Server, DrainingHealth]:
    """The server with both services, health and reflection (no listeners yet)."""
    server = grpc.aio.server(
        # Calls in flight at once, streams included; beyond it RESOURCE_EXHAUSTED.
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second daemon must fail to bind, not share
        ],
    )
    health_servicer = DrainingHealth()
    budget_pb2_grpc.add_BudgetServiceServicer_to_server(BudgetService(runtime), server)
    budget_pb2_grpc.add_BudgetAdminServiceServicer_to_server(BudgetAdminService(runtime), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer
