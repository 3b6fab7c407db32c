"""An in-process gated server (the daemon's TCP server) for the auth service tests.

The server runs on its own event loop in a thread, as in `support`, in memory mode,
listening on TCP 127.0.0.1 (TLS when given) with the gate's identities; tests call it
with the blocking stubs and bearer tokens.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from budgetd.auth import caller_of
from budgetd.auth.gate import Gate, Identities, Registrar
from budgetd.auth.ratelimit import RateLimiter
from budgetd.auth.tls import Tls
from budgetd.core import Engine, Limits, Policy, default_policies
from budgetd.event_log import EventLog
from budgetd.health import SERVING, Health
from budgetd.runtime import Runtime
from budgetd.server import ConnectionLimits, build_server, server_options
from budgetd.v1 import budget_pb2_grpc as rpc
from tests.service.support import ManualClock

# The probe answers the caller the gate set for the call, under a method name the role
# table knows (GetLedger: every role may call it), on a server of its own (with health).
PROBE_METHOD = "/budgetd.v1.BudgetService/GetLedger"


@dataclass
class Gated:
    target: str
    runtime: Runtime
    gate: Gate
    loop: asyncio.AbstractEventLoop
    clock: ManualClock
    _channels: list[grpc.Channel]

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        """A channel with a connection of its own (channels share none)."""
        options = [("grpc.use_local_subchannel_pool", 1)]
        if credentials is None:
            channel = grpc.insecure_channel(self.target, options=options)
        else:  # the test certificates are for "localhost"
            target = self.target.replace("127.0.0.1", "localhost")
            channel = grpc.secure_channel(target, credentials, options=options)
        self._channels.append(channel)
        return channel

    def budget(self, channel: grpc.Channel | None = None) -> rpc.BudgetServiceStub:
        return rpc.BudgetServiceStub(channel or self.channel())

    def admin(self, channel: grpc.Channel | None = None) -> rpc.BudgetAdminServiceStub:
        return rpc.BudgetAdminServiceStub(channel or self.channel())

    def who(self, channel: grpc.Channel, metadata: Any = None) -> dict[str, Any]:
        """What `caller_of` said inside the probe's call."""
        call = channel.unary_unary(
            PROBE_METHOD, request_serializer=bytes, response_deserializer=bytes
        )
        answer: bytes = call(b"", metadata=metadata, timeout=30)
        result: dict[str, Any] = json.loads(answer)
        return result


async def _probe(request: bytes, context: Any) -> bytes:
    caller = caller_of(context)
    scope = dict(caller.scope) if caller.scope is not None else None
    role = caller.role.value if caller.role else None
    return json.dumps({"name": caller.name, "role": role, "scope": scope}).encode()


def _probe_handler() -> grpc.GenericRpcHandler[Any, Any]:
    handler = grpc.unary_unary_rpc_method_handler(_probe)
    return grpc.method_handlers_generic_handler("budgetd.v1.BudgetService", {"GetLedger": handler})


def serve_gated(
    identities: Identities,
    *,
    limits: ConnectionLimits | None = None,
    tls: Tls | None = None,
    policies: tuple[Policy, ...] | None = None,
    probe: bool = False,
    max_streams: int = 4,
    backend: Path | None = None,
    engine_limits: Limits | None = None,
) -> Iterator[Gated]:
    """The real services behind a gate (or, with `probe`, only the probe), on TCP, or
    on the Unix socket `backend` (a relay's)."""
    limits = limits or ConnectionLimits()
    clock = ManualClock()
    engine = Engine(
        default_policies() if policies is None else policies, limits=engine_limits or Limits()
    )
    runtime = Runtime(engine, EventLog(1000, 8, 1000, 0), max_streams=max_streams, clock=clock)
    # A clock the test moves for the rate limiter too: no test waits for a bucket.
    gate = Gate(identities, limits.bounds(), RateLimiter(), clock=clock)
    loop = asyncio.new_event_loop()
    ready: Future[tuple[grpc.aio.Server, int]] = Future()

    async def start() -> None:
        if probe:
            server = grpc.aio.server(options=server_options(64 * 1024, limits))
            registrar = Registrar(server, gate)
            registrar.add_generic_rpc_handlers([_probe_handler()])
            health = Health()
            health.set("", SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(health, registrar)
        else:
            server, _ = build_server(runtime, 64 * 1024, gate=gate, limits=limits)
        if backend is not None:
            port = server.add_insecure_port(f"unix:{backend}")
        elif tls is not None:
            port = server.add_secure_port("127.0.0.1:0", tls.credentials())
        else:
            port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set_result((server, port))

    thread = threading.Thread(target=loop.run_forever, name="gated-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    server, port = ready.result()
    channels: list[grpc.Channel] = []
    try:
        target = f"unix:{backend}" if backend is not None else f"127.0.0.1:{port}"
        yield Gated(target, runtime, gate, loop, clock, channels)
    finally:
        for channel in channels:
            channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def eventually(gated: Gated, condition: Callable[[], bool], wait_s: float = 60.0) -> bool:
    """Whether `condition()`, checked on the server's loop, comes true within `wait_s`
    (generous: a loaded machine is slow; a test waits on the condition, not on time)."""
    deadline = time.monotonic() + wait_s
    while not run_in(gated, condition):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_in(gated: Gated, fn: Callable[[], Any]) -> Any:
    """`fn()` on the server's loop (the engine is only touched there)."""

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), gated.loop).result(timeout=30)
