"""Helpers shared by the SDK's service tests (test_client_*.py); it holds no tests.

Fault injection goes through gRPC client interceptors, so the SDK runs unmodified against
the real in-process server: an interceptor can drop a call before it reaches the server,
let it through and then lose the answer (the case idempotent retries exist for), or hold
it until the test lets it go (a hung daemon). `Daemon` stops and starts a server on the
same socket path: a daemon restart, with a fresh engine that remembers nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc

from budgetd.core import Usage as CoreUsage
from budgetd.runtime import Durability
from budgetd.v1 import budget_pb2 as pb
from budgetd_client import Backoff
from tests import waiting
from tests.service.support import Served, serve

THREAD = {"agent": "writer", "thread": "t1"}
THREAD_KEY = "per-thread{thread=t1}"
# Short waits so retries cost milliseconds; the channel reconnects at this pace too.
FAST = Backoff(initial_s=0.005, max_s=0.02)

Mode = Literal["pass", "drop", "lose", "hold"]


def ledger(served: Served, key: str = THREAD_KEY) -> pb.LedgerStatus:
    """A ledger as the server has it, read with the raw stub."""
    status: pb.LedgerStatus = served.budget.GetLedger(pb.GetLedgerRequest(key=key)).ledger
    return status


def subscribers(served: Served) -> int:
    return served.in_loop(lambda: served.runtime.events.subscriber_count)


def live_subscribers(served: Served) -> int:
    """Subscriptions registered and not ended by a drain."""
    events = served.runtime.events
    return served.in_loop(lambda: sum(not s.closed for s in events._subscribers))


def drain_streams(served: Served) -> None:
    """End every open Subscribe stream the way a draining daemon does (UNAVAILABLE, "resume
    with after_seq=N"), but keep taking new subscriptions: each stream sees one failure and
    its resubscription succeeds at once."""
    events = served.runtime.events

    def drain() -> None:
        events.close()
        events.closed = False

    served.in_loop(drain)


class Daemon:
    """A server that stops and starts again on one socket path (`tmp_path/budgetd.sock`).
    In memory mode (the default here) each start is a fresh engine, as after a restart
    of a daemon that keeps no state; in journal mode it recovers what the last one had."""

    def __init__(self, path: Path, durability: Durability = Durability.MEMORY) -> None:
        self.path = path
        self.durability = durability
        self.target = f"unix:{path}/budgetd.sock"
        self.served: Served | None = None
        self._running: Iterator[Served] | None = None

    def start(self) -> Served:
        assert self._running is None, "already running"
        self._running = serve(self.path, durability=self.durability)
        self.served = next(self._running)
        return self.served

    def stop(self) -> None:
        running, self._running, self.served = self._running, None, None
        if running is not None:
            for _ in running:  # runs the generator's cleanup: the server stops
                pass

    def restart(self) -> Served:
        self.stop()
        return self.start()


def burst(served: Served, count: int) -> None:
    """Publish `count` usage events in one step of the server's loop, so a subscriber
    cannot read in between (run it with `served.in_loop`)."""
    runtime = served.runtime
    for i in range(count):
        _, events = runtime.engine.consume(
            {"thread": "burst"}, CoreUsage(1, 0), f"burst-{i}", served.clock()
        )
        runtime.publish(events)


def wait_until(condition: Callable[[], bool], what: str, tries: int = 2000) -> None:
    """Poll a condition with a bound of `tries` polls (no timed assertion)."""
    waiting.wait_until(condition, what, limit_s=tries * waiting.POLL_S)


class Failure(grpc.RpcError):
    """A failed call as the sync interceptor machinery expects one (`.result()` raises)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def result(self) -> Any:
        raise self


@dataclass
class Seen:
    """What an interceptor saw: (method name, request, thread name) per attempt, and its
    fault plan. `methods`: fault only these (empty: all). "hold" blocks the call until
    `release` is set, then lets it through."""

    mode: Mode = "pass"
    faults: int = 0  # how many calls to fault; then it passes
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    methods: tuple[str, ...] = ()
    calls: list[tuple[str, Any]] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def record(self, method: str | bytes, request: Any) -> Mode:
        name = (method if isinstance(method, str) else method.decode()).rsplit("/", 1)[-1]
        self.calls.append((name, request))
        self.threads.append(threading.current_thread().name)
        if self.mode == "pass" or self.faults == 0:
            return "pass"
        if self.methods and name not in self.methods:
            return "pass"
        self.faults -= 1
        return self.mode

    def requests(self, method: str) -> list[Any]:
        return [request for name, request in self.calls if name == method]

    def threads_of(self, method: str) -> list[str]:
        return [t for (name, _), t in zip(self.calls, self.threads, strict=True) if name == method]


class Flaky(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Sync interceptor: "drop" fails a call before the server sees it, "lose" lets the
    server handle it and then fails it as if the answer was lost."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        mode = self.seen.record(details.method, request)
        if mode == "drop":
            return Failure(self.seen.code, "injected: dropped before the server")
        if mode == "hold":
            self.seen.release.wait(timeout=60)
        outcome = continuation(details, request)
        if mode == "lose":
            outcome.result()  # the server did answer
            return Failure(self.seen.code, "injected: answer lost")
        return outcome


class AsyncFlaky(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """The asyncio twin of `Flaky`."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        mode = self.seen.record(details.method, request)
        if mode == "drop":
            raise _aio_error(self.seen.code, "injected: dropped before the server")
        call = await continuation(details, request)
        await call
        if mode == "lose":
            raise _aio_error(self.seen.code, "injected: answer lost")
        return call


class Rewrite(grpc.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """Sync stream interceptor: passes each streamed message through `change` (e.g. to
    make one event look like what a newer daemon would send)."""

    def __init__(self, change: Callable[[Any], Any]) -> None:
        self.change = change

    def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Any], details: Any, request: Any
    ) -> Any:
        return _Mapped(continuation(details, request), self.change)


class _Mapped:
    """A streaming call whose messages go through `change`; everything else (headers,
    cancel, status) is the call's own."""

    def __init__(self, call: Any, change: Callable[[Any], Any]) -> None:
        self._call = call
        self._change = change

    def __iter__(self) -> _Mapped:
        return self

    def __next__(self) -> Any:
        return self._change(next(self._call))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def _aio_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)
