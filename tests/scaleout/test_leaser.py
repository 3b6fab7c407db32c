"""The leaser (budgetd.scaleout.leaser): sidecars sharing global caps through a real Redis.

Goal: several sidecars (in-process runtimes, each with its own leaser and its own Redis
connection) under concurrent load against one global hard cap never grant more than the
cap plus the bound (a slice per live sidecar), and once each has given back its leases
the Redis totals equal the sum of every acknowledged usage, exactly; a global
concurrency cap is never exceeded across sidecars; usage recorded while Redis is down
is settled exactly once when it is back (a Redis restart mid-load); a settle whose
answer was lost is resent and counted once; under `deny` a sidecar grants what it had
leased and then nothing, under `allow_local` it judges by the cap alone; windows keyed
by their index roll at the same instant on every sidecar, each window's total exact.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from budgetd.core import Decision, Engine, Policy, Usage
from budgetd.core.dimensions import Dimension
from budgetd.core.shares import SHARED_SLOTS, max_slice, unsettled
from budgetd.event_log import EventLog
from budgetd.runtime import Durability, Runtime
from budgetd.scaleout.leaser import Leaser
from budgetd.scaleout.redis_store import GlobalKey, connect
from budgetd.scaleout.settings import GlobalSettings
from tests.redis_server import LocalRedis

T = TypeVar("T")
WAIT_S = 30.0  # only turns a hang into a failure
POLL_S = 0.005
TOKENS = int(Dimension.TOTAL_TOKENS)
SLOTS = int(Dimension.CONCURRENCY)
CAP = 10_000
LABELS = {"agent": "a", "thread": "t"}
ORG = {"name": "org", "scope": "global", "caps": {"total_tokens": CAP}}
RUNS = {"name": "runs", "scope": "global", "caps": {"concurrency": 10}}


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"never happened within {WAIT_S:g} s: {what}")
        await asyncio.sleep(POLL_S)


def settings(url: str, **changes: Any) -> GlobalSettings:
    base: dict[str, Any] = {
        "redis_url": url,
        "sync_interval_s": 0.02,
        "lease_ttl_s": 3.0,
        "timeout_s": 0.5,
        "lease_wait_s": 0.5,
    }
    return GlobalSettings(**{**base, **changes})


@dataclass
class Sidecar:
    """One sidecar: a runtime in memory mode and its leaser, on this test's loop."""

    runtime: Runtime
    leaser: Leaser
    task: asyncio.Task[None] | None = None
    granted: int = 0  # tokens this sidecar acknowledged (committed or consumed)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def request_id(self) -> str:
        return f"r{next(self.ids)}"

    async def reserve_commit(self, tokens: int) -> bool:
        runtime = self.runtime
        args = {"labels": LABELS, "estimate": Usage(tokens, 0), "ttl_s": 60.0, "run_id": ""}
        held = await runtime.apply("reserve", {**args, "request_id": self.request_id()})
        if held.decision is Decision.DENY:
            return False
        commit = {"reservation_id": held.reservation_id, "actual": Usage(tokens, 0)}
        await runtime.apply("commit", {**commit, "request_id": self.request_id()})
        self.granted += tokens
        return True

    async def consume(self, tokens: int) -> None:
        usage = {"labels": LABELS, "usage": Usage(tokens, 0), "run_id": ""}
        await self.runtime.apply("consume", {**usage, "request_id": self.request_id()})
        self.granted += tokens

    async def stop(self, *, give_back: bool = True) -> None:
        if self.task is not None and give_back:  # as the daemon's drain: the round ends
            self.leaser.stop()
            await self.task
        elif self.task is not None:  # as a crash: cut off
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if give_back:
            await self.leaser.sync_all(final=True)
        await self.leaser.store.close()


def sidecar(
    name: str, policies: list[dict[str, Any]], setting: GlobalSettings, start: bool = True
) -> Sidecar:
    engine = Engine(
        [Policy.from_mapping(p) for p in policies],
        global_enabled=True,
        max_slice_fraction=setting.max_slice,
    )
    runtime = Runtime(engine, EventLog(1000, 4, 100), mode=Durability.MEMORY)
    assert setting.redis_url is not None
    store = connect(setting.redis_url, timeout_s=setting.timeout_s)
    leaser = Leaser(runtime, store, setting, name)
    runtime.lease_wait = lambda: leaser.wait_for_lease(setting.lease_wait_s)
    found = Sidecar(runtime, leaser)
    if start:
        found.task = asyncio.create_task(leaser.run())
    return found


async def window_totals(url: str, key: GlobalKey) -> tuple[int, int]:
    """(used, leased) of total tokens in one window, as Redis has them."""
    async with connect(url) as store:
        share = await store.read(key, "reader", [TOKENS])
    return share.used[0], share.leased[0]


LIFETIME = GlobalKey("org", 0, None)


def test_sidecars_under_load_stay_within_the_bound_and_the_totals_are_exact(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url, max_slice=0.05)
    bound = 3 * max_slice(CAP, setting.max_slice)

    async def scenario() -> tuple[list[int], int, int]:
        sidecars = [sidecar(f"host-{i}", [ORG], setting) for i in range(3)]

        async def caller(car: Sidecar, seed: int) -> None:
            rng, denied = random.Random(seed), 0
            while denied < 20:  # the cap is spent: every sidecar hears so in turn
                if await car.reserve_commit(rng.randint(1, 30)):
                    denied = 0
                else:
                    denied += 1
                    await car.leaser.wait_for_lease(0.05)

        await asyncio.gather(
            *(caller(car, 10 * i + k) for i, car in enumerate(sidecars) for k in range(4))
        )
        for car in sidecars:
            await car.stop()
        used, leased = await window_totals(redis_server.url, LIFETIME)
        return [car.granted for car in sidecars], used, leased

    granted, used, leased = run(scenario)
    assert sum(granted) <= CAP + bound
    assert sum(granted) >= CAP - 3 * 30 * 4  # the cap was spent, all but the crumbs
    assert all(g > 0 for g in granted)  # every sidecar served from its slices
    assert used == sum(granted)  # every acknowledged token settled, once
    assert leased == 0  # every lease given back


def test_a_global_concurrency_cap_is_never_exceeded_across_sidecars(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url, max_slice=0.2, min_slice=0.1)

    async def scenario() -> tuple[int, int, int]:
        sidecars = [sidecar(f"host-{i}", [RUNS], setting) for i in range(3)]
        open_now = highest = opened = 0
        ids = itertools.count()

        async def agent(car: Sidecar, seed: int) -> None:
            nonlocal open_now, highest, opened
            rng = random.Random(seed)
            for _ in range(40):
                run_id = f"run-{next(ids)}"
                args = {"labels": LABELS, "run_id": run_id, "ttl_s": 60.0}
                result = await car.runtime.apply(
                    "open_run", {**args, "request_id": car.request_id()}
                )
                if result.decision is Decision.DENY:
                    await car.leaser.wait_for_lease(0.05)
                    continue
                open_now, opened = open_now + 1, opened + 1
                highest = max(highest, open_now)
                await asyncio.sleep(rng.random() * 0.01)
                open_now -= 1  # (before the close: never counted low)
                close = {"run_id": run_id, "request_id": car.request_id()}
                await car.runtime.apply("close_run", close)

        await asyncio.gather(
            *(agent(car, 10 * i + k) for i, car in enumerate(sidecars) for k in range(6))
        )
        for car in sidecars:
            await car.stop()
        async with connect(redis_server.url) as store:
            share = await store.read(GlobalKey("runs", 0, None), "reader", [SLOTS])
        return highest, opened, share.leased[0]

    highest, opened, leased = run(scenario)
    assert highest <= 10
    assert opened >= 40  # the slots moved between sidecars as runs ended
    assert leased == 0


def test_usage_recorded_while_redis_is_down_settles_exactly_once(
    make_redis: Callable[..., LocalRedis],
) -> None:
    server = make_redis(persistent=True)
    setting = settings(server.url)

    async def scenario() -> tuple[int, int]:
        sidecars = [sidecar(f"host-{i}", [ORG], setting) for i in range(3)]

        async def load(rounds: int) -> None:
            for _ in range(rounds):
                for car in sidecars:
                    await car.consume(3)
                await asyncio.sleep(0.001)

        await load(50)
        await asyncio.to_thread(server.stop)
        await until(
            lambda: all(not car.leaser.reachable for car in sidecars), "every sidecar sees Redis go"
        )
        await load(50)  # Consume records whatever Redis does
        await asyncio.to_thread(server.start)
        await load(50)
        total = sum(car.granted for car in sidecars)

        async def settled() -> bool:
            used, _ = await window_totals(server.url, LIFETIME)
            return used == total

        deadline = time.monotonic() + WAIT_S
        while not await settled():
            assert time.monotonic() < deadline, "the usage never settled"
            await asyncio.sleep(0.02)
        for car in sidecars:
            await car.stop()
        used, _ = await window_totals(server.url, LIFETIME)
        return used, total

    used, total = run(scenario)
    assert used == total == 3 * 150 * 3


def test_a_settle_whose_answer_was_lost_is_resent_and_counted_once(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url)

    async def scenario() -> tuple[int, int, bool]:
        car = sidecar("host-0", [ORG], setting, start=False)
        await car.consume(40)
        await car.leaser.sync_all()  # leases; settles the 40
        await car.consume(25)
        engine = car.runtime.engine
        ledger = engine.global_ledger("org")
        assert ledger is not None
        share = engine.shares.of(ledger)
        assert share is not None
        owed = unsettled(ledger.counts(), share)
        seq = share.seq + 1
        args = {"key": "org", "window_start": share.window_start, "seq": seq}
        await car.runtime.apply("share_settling", {**args, "used": owed, "give_back": []})
        dims = list(SHARED_SLOTS)
        # Redis applies it, and the answer never comes back (a timeout, a crash).
        async with connect(redis_server.url) as store:
            await store.settle(
                LIFETIME, "host-0", seq, dims, [owed[d] for d in dims], [0] * len(dims), 3000
            )
        await car.leaser.sync_all()  # resends the same seq: Redis applies it once
        pending = share.settling is not None
        await car.stop()
        used, _ = await window_totals(redis_server.url, LIFETIME)
        return used, car.granted, pending

    used, granted, pending = run(scenario)
    assert not pending
    assert used == granted == 65


def _reserve(car: Sidecar, tokens: int) -> Awaitable[Any]:
    args = {"labels": LABELS, "estimate": Usage(tokens, 0), "ttl_s": 60.0, "run_id": ""}
    return car.runtime.apply("reserve", {**args, "request_id": car.request_id()})


def test_under_deny_what_was_leased_is_granted_then_nothing(
    make_redis: Callable[..., LocalRedis],
) -> None:
    server = make_redis()
    setting = settings(server.url, lease_ttl_s=1.0, timeout_s=0.2, sync_interval_s=0.02)

    async def scenario() -> tuple[Decision, Decision, bool]:
        car = sidecar("host-0", [ORG], setting)
        await until(lambda: car.leaser.reachable, "the first round")
        await car.consume(1)
        await until(lambda: _remaining(car) >= 5, "a slice leased")
        await asyncio.to_thread(server.stop)
        await until(lambda: not car.leaser.reachable, "the leaser sees Redis go")
        within = (await _reserve(car, 5)).decision  # the lease still holds
        await until(lambda: _lapsed(car), "the lease lapses")
        after = await _reserve(car, 1)
        await car.stop(give_back=False)
        return within, after.decision, all(b.lease for b in after.blockers)

    within, after, by_lease = run(scenario)
    assert within is not Decision.DENY
    assert after is Decision.DENY and by_lease


def test_under_allow_local_the_cap_alone_judges_while_redis_is_out_of_reach(
    make_redis: Callable[..., LocalRedis],
) -> None:
    server = make_redis()
    setting = settings(server.url, lease_ttl_s=1.0, timeout_s=0.2)
    policy = {**ORG, "on_unavailable": "allow_local"}

    async def scenario() -> tuple[Decision, Decision]:
        car = sidecar("host-0", [policy], setting)
        await car.consume(1)
        await until(lambda: _remaining(car) > 0, "a slice leased")
        await asyncio.to_thread(server.stop)
        await until(lambda: not car.leaser.reachable, "the leaser sees Redis go")
        beyond_lease = (await _reserve(car, 5_000)).decision  # far past any slice
        beyond_cap = (await _reserve(car, CAP)).decision
        await car.stop(give_back=False)
        return beyond_lease, beyond_cap

    beyond_lease, beyond_cap = run(scenario)
    assert beyond_lease is not Decision.DENY
    assert beyond_cap is Decision.DENY  # the cap itself still holds


def _remaining(car: Sidecar) -> int:
    engine = car.runtime.engine
    ledger = engine.global_ledger("org")
    share = engine.shares.of(ledger) if ledger is not None else None
    if share is None or ledger is None:
        return 0
    return share.allowance.get(TOKENS, 0) - (ledger.count(TOKENS) - share.absorbed[TOKENS])


def _lapsed(car: Sidecar) -> bool:
    engine = car.runtime.engine
    ledger = engine.global_ledger("org")
    share = engine.shares.of(ledger) if ledger is not None else None
    return share is not None and time.time() >= share.lease_until


def test_windows_roll_at_the_same_instant_everywhere_and_each_total_is_exact(
    redis_server: LocalRedis,
) -> None:
    setting = settings(redis_server.url)
    policy = {**ORG, "window": {"kind": "fixed", "duration": "2s"}}

    async def scenario() -> tuple[dict[int, int], dict[int, int]]:
        sidecars = [sidecar(f"host-{i}", [policy], setting) for i in range(2)]
        sent: dict[int, int] = {}  # window index -> tokens consumed in it, by everyone
        while len(sent) < 2:
            for car in sidecars:
                await car.consume(2)
                ledger = car.runtime.engine.global_ledger("org")
                assert ledger is not None
                index = int(ledger.window_start)
                sent[index] = sent.get(index, 0) + 2
            await asyncio.sleep(0.005)
        for car in sidecars:
            await car.stop()
        stored = {}
        for index in sent:
            key = GlobalKey("org", index, (index + 2) * 1000)
            stored[index], _ = await window_totals(redis_server.url, key)
        return sent, stored

    sent, stored = run(scenario)
    # Fixed windows count from the epoch: every sidecar's begin at the same instants.
    assert all(index % 2 == 0 for index in sent)
    assert stored == sent  # each window's total exact, keyed the same by both sidecars
