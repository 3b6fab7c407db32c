"""The asyncio SDK (`AsyncBudgetClient`) against a real in-process server.

No pytest-asyncio: each test runs its scenario with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from budgetd_client import (
    AlreadyExists,
    AsyncBudgetClient,
    AsyncReservation,
    AsyncSubscription,
    BudgetdError,
    BudgetdUnavailable,
    BudgetExhausted,
    Decision,
    Dimension,
    Event,
    EventKind,
    InvalidRequest,
    LedgerState,
    NotFound,
    RunEndReason,
    Usage,
)
from budgetd_client.events import RunEnded, UsageRecorded
from tests.service.client_support import (
    FAST,
    THREAD,
    THREAD_KEY,
    AsyncFlaky,
    Seen,
    burst,
    ledger,
    subscribers,
)
from tests.service.support import Served


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def client_of(served: Served, **options: object) -> AsyncBudgetClient:
    return AsyncBudgetClient(served.target, backoff=FAST, **options)  # type: ignore[arg-type]


async def eventually(condition: Callable[[], bool], what: str, tries: int = 2000) -> None:
    """Poll with a bound, yielding to the loop (no timed assertion)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def in_thread(fn: Callable[[], object]) -> None:
    """Blocking test plumbing (raw stubs, the server's loop) off this loop."""
    await asyncio.to_thread(fn)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


# --- calls ---------------------------------------------------------------------------


def test_consume_check_and_a_denied_reserve(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            consumed = await client.consume(THREAD, Usage(90_000, model="gpt-4o"))
            assert {b.key for b in consumed.ledgers} >= {THREAD_KEY, "daily"}
            assert [c.percent for c in consumed.crossings] == [75, 90]
            denied = await client.check(THREAD, Usage(20_000))
            assert denied.decision is Decision.deny and denied.blockers[0].shortfall == 10_000
            with pytest.raises(BudgetExhausted) as raised:
                await client.reserve(THREAD, Usage(20_000))
            error = raised.value
            assert (error.policy, error.ledger, error.dimension, error.used, error.limit) == (
                "per-thread",
                THREAD_KEY,
                Dimension.total_tokens,
                90_000,
                100_000,
            )

    run(scenario)
    assert ledger(served).dimensions[0].reserved == 0


def test_the_reserve_block_commits_or_releases(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            async with client.reserve(THREAD, Usage(900, 100), ttl_s=30) as held:
                assert isinstance(held, AsyncReservation)
                assert held.expires_at == at(served.clock.now + 30)
                done = await held.commit(Usage(600, 100))
            assert not done.overruns and held.commit_result is done
            with pytest.raises(RuntimeError):
                async with client.reserve(THREAD, Usage(1000)) as failed:
                    raise RuntimeError("model call failed")
            assert failed.released
            async with client.reserve(THREAD, Usage(1000)) as unused:
                pass
            assert unused.released

    run(scenario)
    status = ledger(served)
    assert (status.dimensions[0].reserved, status.reservations) == (0, 0)
    assert (status.totals.total_tokens, status.totals.requests) == (700, 1)


def test_reserve_as_a_plain_await_then_commit_or_release(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            first = await client.reserve(THREAD, Usage(100))
            second = await client.reserve(THREAD, Usage(200))
            await client.commit(first.id, Usage(50))
            assert await second.release() is True
            with pytest.raises(BudgetdError, match="already released"):
                await second.commit(Usage(1))

    run(scenario)
    status = ledger(served)
    assert (status.dimensions[0].reserved, status.totals.total_tokens) == (0, 50)


def test_open_heartbeat_close_and_ledgers(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            opened = await client.open_run(THREAD, run_id="job", ttl_s=60)
            assert (opened.run_id, opened.decision) == ("job", Decision.allow)
            with pytest.raises(AlreadyExists):
                await client.open_run(THREAD, run_id="job")
            await client.consume(THREAD, Usage(10, 5), run_id="job")
            served.clock.advance(30)
            assert (await client.heartbeat("job")).expires_at == at(served.clock.now + 60)
            closed = await client.close_run("job")
            assert (closed.totals.total_tokens, closed.duration_s) == (15, 30)
            for i in range(3):
                await client.consume({"thread": f"x{i}"}, Usage(80_000 if i == 1 else 1))
            keys = [s.key async for s in client.list_ledgers(policy="per-thread")]
            assert keys == [
                "per-thread{thread=x0}",
                "per-thread{thread=x1}",
                "per-thread{thread=x2}",
            ]
            hot = [s.key async for s in client.list_ledgers(min_state=LedgerState.warning)]
            assert hot == ["per-thread{thread=x1}"]
            status = await client.get_ledger("per-thread{thread=x1}")
            assert (status.state, status.totals.total_tokens) == (LedgerState.warning, 80_000)

    run(scenario)


def test_the_run_block_heartbeats_from_a_task_and_closes_with_totals(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            async with client.run(THREAD, ttl_s=60, heartbeat_every_s=0.01) as job:
                served.clock.advance(50)
                await eventually(
                    lambda: job.expires_at == at(served.clock.now + 60), "a heartbeat at t+50"
                )
                served.clock.advance(20)  # past the opening's expiry: only heartbeats keep it
                await in_thread(served.expire)
                await job.consume(Usage(100, 50))
            assert job.heartbeats >= 1 and job.totals is not None
            assert (job.totals.totals.total_tokens, job.totals.duration_s) == (150, 70)
            assert not [t for t in asyncio.all_tasks() if "heartbeat" in t.get_name()]

    run(scenario)


def test_errors_are_typed_and_keep_the_servers_message(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            with pytest.raises(InvalidRequest, match=r"labels\['Bad Key'\]") as raised:
                await client.consume({"Bad Key": "x"}, Usage(1))
            assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(NotFound, match="reservation"):
                await client.commit("res-unknown", Usage(1))

    run(scenario)


def test_a_retry_reuses_the_request_id_so_nothing_counts_twice(served: Served) -> None:
    seen = Seen(mode="lose", faults=2)

    async def scenario() -> None:
        async with client_of(served, interceptors=[AsyncFlaky(seen)]) as client:
            assert (await client.consume(THREAD, Usage(100))).replayed

    run(scenario)
    attempts = seen.requests("Consume")
    assert len(attempts) == 3 and len({r.request_id for r in attempts}) == 1
    assert ledger(served).totals.requests == 1


# --- events ----------------------------------------------------------------------------


def test_subscribe_yields_typed_events(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            kinds = [EventKind.usage_recorded, EventKind.run_ended]
            async with client.subscribe(kinds=kinds) as events:
                await eventually(lambda: subscribers(served) == 1, "the subscription")
                async with client.run(THREAD, run_id="job"):
                    await client.consume(THREAD, Usage(5), run_id="job")
                usage, ended = await anext(events), await anext(events)
            assert isinstance(usage.payload, UsageRecorded) and usage.payload.run_id == "job"
            assert isinstance(ended.payload, RunEnded)
            assert ended.payload.reason is RunEndReason.closed
            assert ended.payload.totals.total_tokens == 5

    run(scenario)


def test_subscribe_resumes_after_a_slow_subscriber_is_cut_off(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(max_lag=5)

    async def scenario() -> None:
        async with client_of(served) as client, client.subscribe() as events:
            await eventually(lambda: subscribers(served) == 1, "the subscription")
            await client.consume(THREAD, Usage(1))
            assert (await anext(events)).seq == 1
            await in_thread(lambda: served.in_loop(lambda: burst(served, 10)))
            assert [(await anext(events)).seq for _ in range(10)] == list(range(2, 12))
            assert events.reconnects == 1

    run(scenario)


def test_closing_a_subscription_from_another_task_ends_the_iteration(served: Served) -> None:
    async def scenario() -> None:
        async with client_of(served) as client:
            events = client.subscribe()
            reader = asyncio.create_task(collect(events))
            await eventually(lambda: subscribers(served) == 1, "the subscription")
            await events.aclose()
            assert await reader == []

    run(scenario)


async def collect(events: AsyncSubscription) -> list[Event]:
    return [event async for event in events]


# --- unreachable daemon ----------------------------------------------------------------


def test_fail_closed_and_fail_open(tmp_path: Path, make_served: Callable[..., Served]) -> None:
    async def scenario() -> None:
        absent = f"unix:{tmp_path}/absent.sock"
        async with AsyncBudgetClient(absent, retries=1, backoff=FAST) as closed:
            with pytest.raises(BudgetdUnavailable):
                await closed.consume(THREAD, Usage(1))
        target = f"unix:{tmp_path}/s0/budgetd.sock"
        async with AsyncBudgetClient(
            target, on_unavailable="allow", retries=1, backoff=FAST
        ) as client:
            assert (await client.check(THREAD, Usage(1))).offline
            for tokens in (1, 2, 3):
                assert (await client.consume(THREAD, Usage(tokens))).offline
            async with client.reserve(THREAD, Usage(10)) as held:
                await held.commit(Usage(4))
            assert client.buffered == 4
            served = await asyncio.to_thread(make_served)
            for _ in range(2000):
                if await client.flush() == 0:
                    break
            totals = ledger(served).totals
            assert (totals.requests, totals.total_tokens) == (4, 10)

    run(scenario)
