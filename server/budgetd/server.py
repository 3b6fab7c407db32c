"""The gRPC server of budgetd, without listeners: both services, health, reflection.

Every handler is registered through a `Gate` (`budgetd.auth.gate`): on a server without
identities (the owner-only Unix socket, and the service tests' server) unary calls run
unwrapped and only streams are bounded; on the gated server every call's caller is
checked. Connections are bounded too: how long one may take to speak HTTP/2, how long it
may stay idle, how often its client may ping, how many calls it may hold open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from budgetd import reflection
from budgetd.auth.gate import Gate, Registrar, Wrap
from budgetd.auth.streams import StreamBounds
from budgetd.call_log import CallLog
from budgetd.health import Health
from budgetd.runtime import Runtime
from budgetd.service import BudgetAdminService, BudgetService
from budgetd.v1 import budget_pb2, budget_pb2_grpc

# Unary calls in flight at once, per server. Long-lived streams are bounded apart
# (`ConnectionLimits.max_streams_total`) and gRPC's own bound is the sum, so streams can
# never take the slots unary calls need.
MAX_UNARY_IN_FLIGHT = 10_000
# HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls one connection may have open at once.
MAX_CALLS_PER_CONNECTION = 1000
# The server pings a connection quiet for this long, and drops it when no answer comes
# within the timeout: a vanished client does not hold its streams for hours.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
# Keepalive enforcement: a client pinging more often than this (while no data flows)
# gets a strike; past MAX_PING_STRIKES it is sent GOAWAY ENHANCE_YOUR_CALM
# "too_many_pings" and disconnected.
MIN_CLIENT_PING_INTERVAL_MS = 10_000
MAX_PING_STRIKES = 2

SERVICE_NAMES = (
    budget_pb2.DESCRIPTOR.services_by_name["BudgetService"].full_name,
    budget_pb2.DESCRIPTOR.services_by_name["BudgetAdminService"].full_name,
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The `[connections]` settings."""

    max_streams_total: int = 1000
    max_streams_per_connection: int = 100
    handshake_timeout_s: float = 10.0  # connect to HTTP/2 settings, TLS included
    idle_timeout_s: float = 600.0  # a connection without calls for this long is closed

    def bounds(self) -> StreamBounds:
        return StreamBounds(self.max_streams_total, self.max_streams_per_connection)


def server_options(max_message_bytes: int, limits: ConnectionLimits) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second daemon must fail to bind, not share
        ("grpc.max_concurrent_streams", MAX_CALLS_PER_CONNECTION),
        # A connection that never sends its HTTP/2 preface and settings (or never
        # finishes the TLS handshake) is closed after this long.
        ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(limits.idle_timeout_s * 1000)),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # Clients may keep an idle connection alive with pings, at the pace below.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]


def build_server(
    runtime: Runtime,
    max_message_bytes: int,
    log_calls: bool = False,
    *,
    gate: Gate | None = None,
    health_servicer: Health | None = None,
    limits: ConnectionLimits | None = None,
    outer: Wrap | None = None,
) -> tuple[grpc.aio.Server, Health]:
    """The server with both services, health and reflection (no listeners yet). Without
    a gate: no identities (every caller is the daemon's own user), streams bounded."""
    limits = limits or ConnectionLimits()
    gate = gate or Gate(None, limits.bounds())
    server = grpc.aio.server(
        maximum_concurrent_rpcs=limits.max_streams_total + MAX_UNARY_IN_FLIGHT,
        interceptors=[CallLog()] if log_calls else [],
        options=server_options(max_message_bytes, limits),
    )
    health_servicer = health_servicer or Health()
    # The generated add_*_to_server functions register through the registrar, which
    # hands the server each handler wrapped by the gate.
    registrar = cast(grpc.aio.Server, Registrar(server, gate, outer))
    budget_pb2_grpc.add_BudgetServiceServicer_to_server(BudgetService(runtime), registrar)
    budget_pb2_grpc.add_BudgetAdminServiceServicer_to_server(BudgetAdminService(runtime), registrar)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    # Reflection (v1alpha and v1) from the committed descriptor set: with the comments.
    reflection.add_to_server(registrar, (*SERVICE_NAMES, health.SERVICE_NAME))
    return server, health_servicer
