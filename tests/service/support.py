"""An in-process grpc.aio server on a Unix socket in a temp dir, for service tests.

The server runs on its own event loop in a background thread, so tests call it with the
ordinary (blocking) gRPC stubs, the sync SDK, or their own asyncio loop. Its clock is a
`ManualClock` the test moves: expiry and rollover are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from budgetd import startup
from budgetd.auth.gate import Gate
from budgetd.auth.streams import StreamBounds
from budgetd.core import Engine, Limits, Policy, default_policies
from budgetd.event_log import DEFAULT_SEND_TIMEOUT_S, EventLog
from budgetd.persistence.statedir import StateDir
from budgetd.runtime import Durability, Runtime
from budgetd.server import ConnectionLimits, build_server
from budgetd.telemetry.settings import TelemetrySettings
from budgetd.v1 import budget_pb2_grpc as rpc

if TYPE_CHECKING:
    from budgetd.telemetry.pipeline import Telemetry

T = TypeVar("T")
START = 1_800_000_000.0


class ManualClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Served:
    target: str
    socket: Path
    runtime: Runtime
    clock: ManualClock
    loop: asyncio.AbstractEventLoop
    channel: grpc.Channel
    bounds: StreamBounds  # the gate's stream bounds (what streams are open)
    telemetry: Telemetry | None = None  # serve(telemetry=...): the metrics pipeline

    @property
    def budget(self) -> rpc.BudgetServiceStub:
        return rpc.BudgetServiceStub(self.channel)

    @property
    def admin(self) -> rpc.BudgetAdminServiceStub:
        return rpc.BudgetAdminServiceStub(self.channel)

    def in_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop (the engine is only ever touched there)."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)

    def expire(self) -> None:
        """What the daemon's timer does on each tick, at the test clock's time."""
        runtime = self.runtime
        asyncio.run_coroutine_threadsafe(runtime.apply("expire", {}), self.loop).result(30)


def serve(
    tmp_path: Path,
    policies: tuple[Policy, ...] | None = None,
    limits: Limits | None = None,
    max_message_bytes: int = 64 * 1024,
    retention: int = 10_000,
    max_subscribers: int = 8,
    max_lag: int = 1_000,
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    max_streams: int = 4,
    engine_type: type[Engine] = Engine,
    durability: Durability = Durability.JOURNAL,
    telemetry: TelemetrySettings | None = None,
) -> Iterator[Served]:
    """A server as the daemon runs it: in journal mode (unless asked otherwise) on a
    state directory in `tmp_path`, so every call takes the real mutation path; with
    `telemetry`, the daemon's metrics pipeline too (interceptor, hooks, exporters)."""
    limits = limits or Limits()
    clock = ManualClock()
    chosen = default_policies(limits) if policies is None else policies
    engine = engine_type(chosen, limits=limits)
    if engine_type is not Engine:  # a test's own engine is the state: nothing to recover
        durability = Durability.MEMORY

    def events(last_seq: int) -> EventLog:
        return EventLog(retention, max_subscribers, max_lag, last_seq, send_timeout_s)

    runtime = Runtime(engine, events(0), max_streams=max_streams, clock=clock, mode=durability)
    socket = tmp_path / "budgetd.sock"
    loop = asyncio.new_event_loop()
    ready: Future[grpc.aio.Server] = Future()
    state = StateDir(tmp_path / "state")
    bounds = ConnectionLimits().bounds()  # as build_server's own gate would have them
    pipeline = None
    if telemetry is not None:
        from budgetd.telemetry.pipeline import Telemetry  # noqa: PLC0415 (loads the SDK)

        pipeline = Telemetry(telemetry, runtime, "test")

    async def start() -> None:
        if pipeline is not None:
            pipeline.start()
        if durability is not Durability.MEMORY:
            state.open()
            await startup.restore(
                runtime, state, chosen, limits, engine.prices, events, _refuse(runtime)
            )
        if pipeline is not None:
            pipeline.attach()
        server, _ = build_server(
            runtime,
            max_message_bytes,
            gate=Gate(None, bounds),
            outer=pipeline.rpc.wrap if pipeline is not None else None,
        )
        server.add_insecure_port(f"unix:{socket}")
        await server.start()
        ready.set_result(server)

    thread = threading.Thread(target=loop.run_forever, name="grpc-aio-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    server = ready.result()
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield Served(f"unix:{socket}", socket, runtime, clock, loop, channel, bounds, pipeline)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=30)
        if pipeline is not None:
            asyncio.run_coroutine_threadsafe(pipeline.stop(), loop).result(timeout=30)
        store = runtime.store
        if store is not None and store.journal is not None:
            asyncio.run_coroutine_threadsafe(store.journal.close(), loop).result(timeout=30)
        state.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _refuse(runtime: Runtime) -> Callable[[str | None], None]:
    def on_health(problem: str | None) -> None:
        runtime.refusing = problem

    return on_health
