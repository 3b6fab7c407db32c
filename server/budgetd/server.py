"""The gRPC server of budgetd, without listeners: both services, health, reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from budgetd import reflection
from budgetd.call_log import CallLog
from budgetd.health import Health
from budgetd.runtime import Runtime
from budgetd.service import BudgetAdminService, BudgetService
from budgetd.v1 import budget_pb2, budget_pb2_grpc

MAX_CONCURRENT_RPCS = 10_000
SERVICE_NAMES = (
    budget_pb2.DESCRIPTOR.services_by_name["BudgetService"].full_name,
    budget_pb2.DESCRIPTOR.services_by_name["BudgetAdminService"].full_name,
)


def build_server(
    runtime: Runtime, max_message_bytes: int, log_calls: bool = False
) -> tuple[grpc.aio.Server, Health]:
    """The server with both services, health and reflection (no listeners yet)."""
    server = grpc.aio.server(
        # Calls in flight at once, streams included; beyond it RESOURCE_EXHAUSTED.
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        interceptors=[CallLog()] if log_calls else [],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second daemon must fail to bind, not share
        ],
    )
    health_servicer = Health()
    budget_pb2_grpc.add_BudgetServiceServicer_to_server(BudgetService(runtime), server)
    budget_pb2_grpc.add_BudgetAdminServiceServicer_to_server(BudgetAdminService(runtime), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection (v1alpha and v1) from the committed descriptor set: with the comments.
    reflection.add_to_server(server, (*SERVICE_NAMES, health.SERVICE_NAME))
    return server, health_servicer
