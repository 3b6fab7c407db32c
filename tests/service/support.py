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
from typing import TypeVar

import grpc

from budgetd.core import Engine, Limits, Policy, default_policies
from budgetd.event_log import EventLog
from budgetd.server import build_server
from budgetd.service import Runtime
from budgetd.v1 import budget_pb2_grpc as rpc

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
        self.in_loop(lambda: runtime.publish(runtime.engine.expire(self.clock())))


def serve(
    tmp_path: Path,
    policies: tuple[Policy, ...] | None = None,
    limits: Limits | None = None,
    max_message_bytes: int = 64 * 1024,
    retention: int = 10_000,
    max_subscribers: int = 8,
    max_lag: int = 1_000,
    max_streams: int = 4,
    engine_type: type[Engine] = Engine,
) -> Iterator[Served]:
    limits = limits or Limits()
    clock = ManualClock()
    engine = engine_type(default_policies(limits) if policies is None else policies, limits=limits)
    runtime = Runtime(
        engine,
        EventLog(retention, max_subscribers, max_lag),
        tmp_path / "state",
        max_streams=max_streams,
        clock=clock,
    )
    socket = tmp_path / "budgetd.sock"
    loop = asyncio.new_event_loop()
    ready: Future[grpc.aio.Server] = Future()

    async def start() -> None:
        server, _ = build_server(runtime, max_message_bytes)
        server.add_insecure_port(f"unix:{socket}")
        await server.start()
        ready.set_result(server)

    thread = threading.Thread(target=loop.run_forever, name="grpc-aio-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    server = ready.result()
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield Served(f"unix:{socket}", socket, runtime, clock, loop, channel)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
