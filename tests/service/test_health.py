"""The health service: Check, Watch, and a drain that every open watch reports.

Goal: a Watch open when the drain begins always sees NOT_SERVING and then ends — even
when the drain begins while the watch is in the middle of writing (the interleaving
that made the stock servicer end on SERVING). Method: the servicer driven directly with
a context whose write blocks until the test lets it go, so the interleaving is pinned,
not hoped for; then the same through a real in-process grpc.aio server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, Health

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from the stubs
REQUEST = health_pb2.HealthCheckRequest(service="")


class BlockingContext:
    """Records what a Watch writes; the first `held` writes wait for `release`."""

    def __init__(self, held: int) -> None:
        self.written: list[int] = []
        self.writing = asyncio.Event()
        self.release = asyncio.Event()
        self.held = held

    async def write(self, message: health_pb2.HealthCheckResponse) -> None:
        self.written.append(message.status)
        if self.held:
            self.held -= 1
            self.writing.set()
            await self.release.wait()


def test_a_drain_that_begins_during_a_write_is_still_reported() -> None:
    async def scenario() -> list[int]:
        health = Health()
        health.set("", SERVING)
        context = BlockingContext(held=1)
        watch = asyncio.create_task(health.Watch(REQUEST, cast(Any, context)))
        await context.writing.wait()  # the watch is inside its write of SERVING
        health.enter_graceful_shutdown()
        context.release.set()
        await asyncio.wait_for(watch, 10)  # it ends (a hang fails the test)
        return context.written

    assert asyncio.run(scenario()) == [SERVING, NOT_SERVING]


def test_the_drain_can_wait_until_every_open_watch_has_written_its_end() -> None:
    # The daemon awaits watches_ended() before it stops the server, so each watcher's
    # NOT_SERVING is on the wire before the GOAWAY and the close of the connection.
    async def scenario() -> tuple[bool, bool, list[int]]:
        health = Health()
        health.set("", SERVING)
        await asyncio.wait_for(health.watches_ended(), 10)  # none open: at once
        context = BlockingContext(held=2)
        watch = asyncio.create_task(health.Watch(REQUEST, cast(Any, context)))
        await context.writing.wait()
        ended = asyncio.create_task(health.watches_ended())
        health.enter_graceful_shutdown()
        await asyncio.sleep(0)
        while_writing = ended.done()  # the watch still owes NOT_SERVING
        context.release.set()
        await asyncio.wait_for(ended, 10)
        return while_writing, watch.done(), context.written

    assert asyncio.run(scenario()) == (False, True, [SERVING, NOT_SERVING])


def test_changes_during_a_write_are_not_missed_and_statuses_are_deduplicated() -> None:
    async def scenario() -> list[int]:
        health = Health()
        context = BlockingContext(held=1)
        watch = asyncio.create_task(health.Watch(REQUEST, cast(Any, context)))
        await context.writing.wait()  # writing the initial NOT_SERVING
        health.set("", SERVING)
        health.set("", SERVING)  # no change: nothing more to say
        context.release.set()
        while len(context.written) < 2:
            await asyncio.sleep(0)
        health.enter_graceful_shutdown()
        await asyncio.wait_for(watch, 10)
        return context.written

    assert asyncio.run(scenario()) == [NOT_SERVING, SERVING, NOT_SERVING]


def test_an_unknown_service_is_watched_as_unknown_and_after_a_drain_set_is_ignored() -> None:
    async def scenario() -> tuple[list[int], int | None]:
        health = Health()
        context = BlockingContext(held=0)
        watch = asyncio.create_task(
            health.Watch(health_pb2.HealthCheckRequest(service="nope"), cast(Any, context))
        )
        while not context.written:
            await asyncio.sleep(0)
        health.enter_graceful_shutdown()
        await asyncio.wait_for(watch, 10)
        health.set("", SERVING)
        return context.written, health.status("")

    assert asyncio.run(scenario()) == ([SERVICE_UNKNOWN], NOT_SERVING)


async def _rest(call: Any) -> list[int]:
    statuses = []
    while (message := await call.read()) is not EOF:
        statuses.append(message.status)
    return statuses


def test_over_a_real_server_watches_end_after_reporting_the_drain(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[list[int]], Any]:
        health = Health()
        health.set("", SERVING)
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        target = f"unix:{tmp_path}/health.sock"
        server.add_insecure_port(target)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
                watches = [stub.Watch(REQUEST) for _ in range(8)]
                for call in watches:  # every watch has seen SERVING before the drain
                    assert (await call.read()).status == SERVING
                health.enter_graceful_shutdown()
                seen = [await _rest(call) for call in watches]
        finally:
            await server.stop(None)
        return seen, missing.value.code()

    seen, missing_code = asyncio.run(scenario())
    assert seen == [[NOT_SERVING]] * 8
    assert missing_code == grpc.StatusCode.NOT_FOUND


def test_list_answers_every_service_status() -> None:
    """Health.List (in grpcio-health's descriptor) is served, not UNIMPLEMENTED."""
    health = Health()
    health.set("", SERVING)
    health.set("budgetd.v1.BudgetService", SERVING)
    answer = asyncio.run(health.List(health_pb2.HealthListRequest(), None))  # type: ignore[arg-type]
    assert {name: s.status for name, s in answer.statuses.items()} == {
        "": SERVING,
        "budgetd.v1.BudgetService": SERVING,
    }
