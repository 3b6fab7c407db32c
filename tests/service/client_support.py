"""Helpers shared by the SDK's service tests (test_client_*.py); it holds no tests.

Fault injection goes through gRPC client interceptors, so the SDK runs unmodified against
the real in-process server: an interceptor can drop a call before it reaches the server,
or let it through and then lose the answer (the case idempotent retries exist for).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc

from budgetd.core import Usage as CoreUsage
from budgetd.v1 import budget_pb2 as pb
from budgetd_client import Backoff
from tests.service.support import Served

THREAD = {"agent": "writer", "thread": "t1"}
THREAD_KEY = "per-thread{thread=t1}"
# Short waits so retries cost milliseconds; the channel reconnects at this pace too.
FAST = Backoff(initial_s=0.005, max_s=0.02)

Mode = Literal["pass", "drop", "lose"]


def ledger(served: Served, key: str = THREAD_KEY) -> pb.LedgerStatus:
    """A ledger as the server has it, read with the raw stub."""
    status: pb.LedgerStatus = served.budget.GetLedger(pb.GetLedgerRequest(key=key)).ledger
    return status


def subscribers(served: Served) -> int:
    return served.in_loop(lambda: served.runtime.events.subscriber_count)


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
    """Poll a condition with a bound (no timed assertion: a slow machine only waits)."""
    for _ in range(tries):
        if condition():
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"never happened: {what}")


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
    """What an interceptor saw: (method name, request) per attempt, and its fault plan."""

    mode: Mode = "pass"
    faults: int = 0  # how many calls to fault; then it passes
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def record(self, method: str | bytes, request: Any) -> Mode:
        name = method if isinstance(method, str) else method.decode()
        self.calls.append((name.rsplit("/", 1)[-1], request))
        if self.mode == "pass" or self.faults == 0:
            return "pass"
        self.faults -= 1
        return self.mode

    def requests(self, method: str) -> list[Any]:
        return [request for name, request in self.calls if name == method]


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


def _aio_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)
