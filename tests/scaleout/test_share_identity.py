"""One share per Redis window, settles numbered above Redis's: against a real Redis.

Goal: Redis keeps one lease and one settle sequence number per sidecar and window, and
applies a settle once per number, so whatever starts a sidecar's share of a window
again must neither drop settles as repeats nor count usage twice. A policy deleted and
put back within its window (lifetime or fixed) takes its window's share back and every
token reaches Redis once; a sidecar that starts again from nothing under the same
sidecar id (memory mode, a wiped state directory) has its settles counted; a settle
Redis refuses as a repeat (someone else settled under this id) is numbered again, not
lost; a ledger opened while Redis is out of reach is judged by `allow_local` at once;
a Redis that stops answering fails a call at its deadline, not later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from budgetd.core import Decision, Policy, Usage
from budgetd.scaleout.redis_store import GlobalKey, StoreUnavailable, connect
from tests.redis_server import LocalRedis
from tests.scaleout.test_leaser import (
    LABELS,
    LIFETIME,
    ORG,
    TOKENS,
    Sidecar,
    run,
    settings,
    sidecar,
    until,
    window_totals,
)

HOUR = {"kind": "fixed", "duration": "1h"}


async def _settle_all(car: Sidecar) -> None:
    """Rounds until the share owes Redis nothing (the leaser's task is not running)."""
    for _ in range(5):
        await car.leaser.sync_all()


def _window_of(car: Sidecar) -> GlobalKey:
    ledger = car.runtime.engine.global_ledger("org")
    assert ledger is not None
    if ledger.policy.window.kind.value == "lifetime":
        return LIFETIME
    start = int(ledger.window_start)
    return GlobalKey("org", start, int(ledger.window_end * 1000))


@pytest.mark.parametrize("window", [None, HOUR], ids=["lifetime", "fixed"])
def test_a_policy_deleted_and_put_back_in_its_window_settles_every_token_once(
    redis_server: LocalRedis, window: dict[str, str] | None
) -> None:
    policy = {**ORG, "window": window} if window else ORG
    setting = settings(redis_server.url)

    async def scenario() -> tuple[int, int, int, int]:
        car = sidecar("host-0", [policy], setting, start=False)
        await car.leaser.sync_all()  # opens nothing yet: the first Consume does
        await car.consume(300)
        await _settle_all(car)
        await car.consume(200)  # still owed to Redis when the ledger closes
        await car.runtime.apply("delete_policy", {"name": "org"})
        put = {"policy": Policy.from_mapping(policy), "apply_to_existing": False}
        await car.runtime.apply("put_policy", {**put, "origin": "api"})
        await car.consume(100)  # the new ledger, in the same window
        ledger = car.runtime.engine.global_ledger("org")
        assert ledger is not None
        continued = ledger.count(TOKENS)
        await _settle_all(car)
        key = _window_of(car)
        await car.stop()
        used, leased = await window_totals(redis_server.url, key)
        return continued, used, leased, len(car.runtime.engine.shares.closing)

    continued, used, leased, closing = run(scenario)
    assert continued == 600  # the new ledger continues from the closed one's counters
    assert used == 600  # every token once
    assert leased == 0  # every lease given back
    assert closing == 0  # the window's share was taken back, not kept twice


def test_a_sidecar_starting_again_from_nothing_has_its_settles_counted(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url)

    async def scenario() -> int:
        first = sidecar("host-0", [ORG], setting)
        for _ in range(5):  # several settles: Redis keeps host-0's seq above 1
            await first.consume(10)
            await until(lambda: _settled(first) == first.granted, "the usage settled")
        await first.stop()
        again = sidecar("host-0", [ORG], setting)  # memory mode: a share from nothing
        await again.consume(70)
        await until(lambda: _settled(again) == 70, "the new share's usage settled")
        await again.stop()
        used, _ = await window_totals(redis_server.url, LIFETIME)
        return used

    assert run(scenario) == 50 + 70


def test_a_settle_refused_as_a_repeat_is_numbered_again_not_lost(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url)

    async def scenario() -> int:
        car = sidecar("host-0", [ORG], setting, start=False)
        await car.consume(10)
        await _settle_all(car)
        share = car.runtime.engine.shares.live["org"]
        # Someone else settles under host-0's id, far ahead of this share's numbers.
        async with connect(redis_server.url) as other:
            await other.settle(LIFETIME, "host-0", share.seq + 10, [TOKENS], [5], [0], 3000)
        await car.consume(70)
        await _settle_all(car)
        await car.stop()
        used, _ = await window_totals(redis_server.url, LIFETIME)
        return used

    assert run(scenario) == 10 + 5 + 70


def _settled(car: Sidecar) -> int:
    share = car.runtime.engine.shares.live.get("org")
    return 0 if share is None else share.settled[TOKENS]


def test_a_ledger_opened_while_redis_is_out_of_reach_is_judged_by_allow_local_at_once(
    redis_server: LocalRedis,
) -> None:
    policy: dict[str, Any] = {**ORG, "per": ["thread"], "on_unavailable": "allow_local"}
    setting = settings(redis_server.url)

    async def scenario() -> tuple[Decision, Decision]:
        car = sidecar("host-0", [policy], setting)
        await car.consume(1)  # thread t: Redis answers for it
        await until(lambda: car.leaser.reachable, "Redis answered a round")
        await asyncio.to_thread(redis_server.stop)
        await until(lambda: not car.leaser.reachable, "the leaser sees Redis go")
        labels = {**LABELS, "thread": "new"}  # a ledger opened now
        args = {"labels": labels, "estimate": Usage(500, 0), "ttl_s": 60.0, "run_id": ""}
        within = await car.runtime.apply("reserve", {**args, "request_id": "r-new"})
        past = {**args, "estimate": Usage(20_000, 0), "request_id": "r-past"}
        beyond = await car.runtime.apply("reserve", past)
        await car.stop(give_back=False)
        return within.decision, beyond.decision

    within, beyond = run(scenario)
    assert within is Decision.ALLOW  # judged by the cap alone, at once
    assert beyond is Decision.DENY  # the cap itself holds


@contextlib.contextmanager
def _paused(server: LocalRedis) -> Iterator[None]:
    """Redis stopped (SIGSTOP): connected, listening, answering nothing."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def test_a_redis_that_stops_answering_fails_a_call_at_its_deadline(
    redis_server: LocalRedis,
) -> None:
    async def scenario() -> str:
        # The sockets' own timeout far longer than the call's deadline: what ends the
        # call must be the deadline (retries would otherwise let it run several times).
        async with connect(redis_server.url, timeout_s=30, call_timeout_s=0.2) as store:
            await store.read(LIFETIME, "host-0", [TOKENS])  # connected
            with _paused(redis_server), pytest.raises(StoreUnavailable) as failed:
                await store.lease(LIFETIME, "host-0", 3000, [TOKENS], [100], [10])
            answer = await store.read(LIFETIME, "host-0", [TOKENS])  # answers again
            assert answer.seq == -1
        return failed.value.reason

    assert run(scenario) == "no answer within 0.2 s (timeout_seconds)"


def test_a_wait_for_lease_says_whether_a_round_of_leases_finished_in_it(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url, sync_interval_s=30.0)  # rounds only when woken

    async def scenario() -> tuple[bool, bool, int]:
        car = sidecar("host-0", [ORG], setting)
        await until(lambda: car.leaser.rounds >= 1, "a first round")
        rounds = car.leaser.rounds
        without = await car.leaser.wait_for_lease(0)  # wakes the leaser, waits for nothing
        await until(lambda: car.leaser.rounds > rounds, "the woken round")
        waited = await car.leaser.wait_for_lease(5.0)
        await car.stop()
        return without, waited, car.leaser.rounds - rounds

    without, waited, rounds = run(scenario)
    assert not without  # nothing to judge again: the same lease as before
    assert waited and rounds >= 2


def test_a_share_that_closed_while_its_round_looked_is_synced_as_closing(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url)

    async def scenario() -> tuple[Any, Any]:
        car = sidecar("host-0", [ORG], setting, start=False)
        await car.runtime.apply("open_global", {"labels": LABELS})
        (live,) = car.leaser._targets(final=False)
        await car.runtime.apply("delete_policy", {"name": "org"})
        fresh = car.leaser._refreshed(live, final=False)
        await car.stop(give_back=False)
        return live, fresh

    live, fresh = run(scenario)
    assert not live.closing and live.caps == [(TOKENS, 10_000)]
    assert fresh is not None and fresh.share is live.share
    assert fresh.closing and fresh.reserved == ()  # nothing more leased for it
    assert all(limit == 0 for _, limit in fresh.caps)


def test_a_call_waiting_for_a_first_lease_is_judged_again_once_redis_is_found_gone() -> None:
    # Nothing listens on port 1: the first round finds Redis out of reach at once.
    setting = settings("redis://127.0.0.1:1/0", lease_wait_s=5.0)
    policy: dict[str, Any] = {**ORG, "on_unavailable": "allow_local"}

    async def scenario() -> tuple[Decision, bool, Decision]:
        car = sidecar("host-0", [policy], setting, start=False)
        args = {"labels": LABELS, "estimate": Usage(500, 0), "ttl_s": 60.0, "run_id": ""}
        first = await car.runtime.apply("reserve", {**args, "request_id": "r1"})
        car.task = asyncio.create_task(car.leaser.run())  # no round has finished yet
        again = await car.leaser.wait_for_lease(setting.lease_wait_s)
        second = await car.runtime.apply("reserve", {**args, "request_id": "r1"})
        await car.stop(give_back=False)
        return first.decision, again, second.decision

    first, again, second = run(scenario)
    assert first is Decision.DENY  # not leased yet, Redis not known out of reach
    assert again  # the round found Redis gone: under allow_local the cap alone judges
    assert second is Decision.ALLOW
