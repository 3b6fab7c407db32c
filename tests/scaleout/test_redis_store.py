"""The Redis side of global budgets (budgetd.scaleout.redis_store), on a real redis-server.

Goal: leases never grant past a cap, whatever the number of sidecars and concurrent
callers, and the settled totals in Redis are exact; a settle counts once per
(sidecar, seq), even resent after its lease was reaped; a dead sidecar's slice returns
to the pool at its deadline and its seq is kept (forgotten only after the bound);
CONCURRENCY is a gauge (no usage, slots come back by give_back); a window's keys share
one hash slot whatever braces its ledger key has, and expire at its end plus the grace
(a lifetime window's never); the scripts survive a flushed script cache and a Redis
restart; every Redis failure is StoreUnavailable, and the store recovers; every URL form
connects (TLS, a Unix socket, a Sentinel and a one-node Cluster for real) or is refused
naming what is wrong, never quoting a password.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import random
import re
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot

from bench.redis_peer import free_port
from budgetd.core.dimensions import CACHED_INPUT_TOKENS, LATENCY_US_SUM, Dimension
from budgetd.scaleout import scripts
from budgetd.scaleout.redis_store import (
    KEY_GRACE_MS,
    KEY_PARTS,
    SEQ_KEEP_MS,
    GlobalKey,
    RedisStore,
    Share,
    StoreUnavailable,
    connect,
    parse_url,
    redis_keys,
)
from tests.auth_support import Authority
from tests.redis_server import MASTER_NAME, LocalRedis, cluster_node, sentinel

T = TypeVar("T")
DIMS = (Dimension.TOTAL_TOKENS, Dimension.COST_MICRO_USD, Dimension.REQUESTS)
TTL_MS = 60_000
SHORT_TTL_MS = 300  # a lease the tests let expire (waiting on Redis, never on a clock)
WAIT_S = 30.0
POLL_S = 0.01
LEDGER = "org-daily{tenant=acme}"
HEARTBEAT_SHA = hashlib.sha1(scripts.HEARTBEAT.encode()).hexdigest()
KEY = GlobalKey(LEDGER, 20_425, None)


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


async def eventually(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    """Return once `probe()` is true; the bound only turns a hang into a failure."""
    deadline = time.monotonic() + WAIT_S
    while not await probe():
        if time.monotonic() >= deadline:
            raise AssertionError(f"never happened within {WAIT_S:g} s: {what}")
        await asyncio.sleep(POLL_S)


def redis_now_ms(conn: redis.Redis) -> int:
    seconds, micros = conn.time()
    return int(seconds) * 1000 + int(micros) // 1000


def within_caps(share: Share, caps: tuple[int, ...]) -> bool:
    return all(u + held <= cap for u, held, cap in zip(share.used, share.leased, caps, strict=True))


def test_concurrent_leasers_never_pass_the_cap_and_the_totals_are_exact(
    redis_server: LocalRedis,
) -> None:
    caps = (5_000, 2_000_000, 300)
    rounds = 15

    async def scenario() -> tuple[Share, list[int], int, list[Share]]:
        stores = [connect(redis_server.url) for _ in range(3)]
        settled, seen, short = [0, 0, 0], [], 0

        async def host(number: int, store: RedisStore) -> None:
            name, lock, seqs = f"host-{number}", asyncio.Lock(), itertools.count(1)

            async def caller(task: int) -> None:
                nonlocal short
                rnd = random.Random(number * 1_000 + task)
                for _ in range(rounds):
                    wants = (rnd.randint(1, 60), rnd.randint(1, 20_000), rnd.randint(1, 3))
                    share = await store.lease(KEY, name, TTL_MS, DIMS, caps, wants)
                    seen.append(share)
                    short += share.granted != wants
                    used = tuple(rnd.randint(0, g) for g in share.granted)
                    back = tuple(g - u for g, u in zip(share.granted, used, strict=True))
                    async with lock:  # one sidecar settles a window in seq order
                        share = await store.settle(KEY, name, next(seqs), DIMS, used, back, TTL_MS)
                    assert share.applied
                    seen.append(share)
                    settled[:] = [s + u for s, u in zip(settled, used, strict=True)]

            await asyncio.gather(*(caller(task) for task in range(20)))

        await asyncio.gather(*(host(n, store) for n, store in enumerate(stores)))
        final = await stores[0].read(KEY, "host-0", DIMS)
        for store in stores:
            await store.close()
        return final, settled, short, seen

    final, settled, short, seen = run(scenario)
    assert len(seen) == 2 * 3 * 20 * rounds
    assert all(within_caps(share, caps) for share in seen)
    assert all(all(g >= 0 for g in share.granted) for share in seen)
    assert short > 0  # the budget ran out: some leases were cut to what was left
    assert list(final.used) == settled  # every settled unit counted once
    assert final.leased == (0, 0, 0) and final.lease == (0, 0, 0) and final.sidecars == 0
    assert final.used[0] <= caps[0] and final.used[0] > caps[0] // 2


def test_a_resent_settle_changes_nothing(redis_server: LocalRedis) -> None:
    caps, wants = (1_000, 10**6, 100), (100, 5_000, 10)

    async def scenario() -> list[Share]:
        async with connect(redis_server.url) as store:
            await store.lease(KEY, "a", TTL_MS, DIMS, caps, wants)
            first = await store.settle(KEY, "a", 1, DIMS, (10, 500, 1), (0, 0, 0), TTL_MS)
            again = await store.settle(KEY, "a", 1, DIMS, (10, 500, 1), (0, 0, 0), TTL_MS)
            other = await store.settle(KEY, "a", 1, DIMS, (50, 9, 9), (5, 5, 5), TTL_MS)
            older = await store.settle(KEY, "a", 0, DIMS, (1, 1, 1), (0, 0, 0), TTL_MS)
            after = await store.read(KEY, "a", DIMS)
            nxt = await store.settle(KEY, "a", 2, DIMS, (5, 0, 0), (0, 0, 0), TTL_MS)
            return [first, again, other, older, after, nxt]

    first, again, other, older, after, nxt = run(scenario)
    assert first.applied and first.used == (10, 500, 1) and first.lease == (90, 4_500, 9)
    for resent in (again, other, older):
        assert not resent.applied
        assert (resent.used, resent.lease, resent.leased) == (first.used, first.lease, first.leased)
    assert (after.used, after.lease) == (first.used, first.lease)
    assert nxt.applied and nxt.used == (15, 500, 1) and nxt.lease == (85, 4_500, 9)


def test_give_back_returns_a_slice_to_the_pool(redis_server: LocalRedis) -> None:
    caps, dims = (1_000, 100), (Dimension.TOTAL_TOKENS, Dimension.REQUESTS)

    async def scenario() -> list[Share]:
        async with connect(redis_server.url) as store:
            granted = await store.lease(KEY, "a", TTL_MS, dims, caps, (100, 10))
            part = await store.settle(KEY, "a", 1, dims, (30, 2), (50, 3), TTL_MS)
            rest = await store.settle(KEY, "a", 2, dims, (0, 0), (20, 5), TTL_MS)
            other = await store.lease(KEY, "b", TTL_MS, dims, caps, (10_000, 10_000))
            return [granted, part, rest, other]

    granted, part, rest, other = run(scenario)
    assert granted.granted == (100, 10) and granted.sidecars == 1
    assert part.lease == (20, 5) and part.leased == (20, 5) and part.used == (30, 2)
    assert part.granted == (0, 0) and part.sidecars == 1
    assert rest.lease == (0, 0) and rest.leased == (0, 0) and rest.sidecars == 0
    assert other.granted == (970, 98)  # everything but what "a" used
    with redis_server.client() as conn:
        expiry = redis_keys(KEY)[KEY_PARTS.index("expiry")]
        assert conn.zscore(expiry, "a") is None  # nothing held: not among the live
        assert conn.zscore(expiry, "b") is not None


def test_an_expired_lease_returns_to_the_pool_and_its_seq_is_kept(
    redis_server: LocalRedis,
) -> None:
    caps, dims = (1_000,), (Dimension.TOTAL_TOKENS,)

    async def scenario() -> list[Share]:
        async with connect(redis_server.url) as store:
            await store.lease(KEY, "dies", SHORT_TTL_MS, dims, caps, (400,))
            settled = await store.settle(KEY, "dies", 1, dims, (100,), (0,), SHORT_TTL_MS)
            lives = await store.lease(KEY, "lives", TTL_MS, dims, caps, (10_000,))

            async def reaped() -> bool:
                share = await store.read(KEY, "lives", dims)
                return share.sidecars == 1 and share.leased == (600,)

            await eventually(reaped, "the dead sidecar's lease is reaped")
            regained = await store.lease(KEY, "lives", TTL_MS, dims, caps, (10_000,))
            resent = await store.settle(KEY, "dies", 1, dims, (100,), (0,), TTL_MS)
            late = await store.settle(KEY, "dies", 2, dims, (50,), (10,), TTL_MS)
            return [settled, lives, regained, resent, late]

    settled, lives, regained, resent, late = run(scenario)
    assert settled.lease == (300,) and settled.used == (100,)
    assert lives.granted == (600,)
    assert regained.granted == (300,) and regained.lease == (900,)  # the dead slice
    assert not resent.applied and resent.used == (100,)  # its seq outlived its lease
    # A settle after the reaping counts its usage, and its lease clamps at zero.
    assert late.applied and late.used == (150,)
    assert late.lease == (0,) and late.leased == (900,) and late.sidecars == 1
    with redis_server.client() as conn:
        seq = redis_keys(KEY)[KEY_PARTS.index("seq")]
        assert conn.hget(seq, "dies") == b"2"


def test_a_sidecars_seq_is_forgotten_after_the_bound(redis_server: LocalRedis) -> None:
    dims = (Dimension.REQUESTS,)
    seq_key = redis_keys(KEY)[KEY_PARTS.index("seq")]
    assert SEQ_KEEP_MS == 7 * 24 * 3600 * 1000

    async def scenario() -> list[Share]:
        store = connect(redis_server.url, seq_keep_ms=SHORT_TTL_MS)
        async with store:
            first = await store.settle(KEY, "a", 5, dims, (1,), (0,), TTL_MS)
            again = await store.settle(KEY, "a", 5, dims, (1,), (0,), TTL_MS)
            with redis_server.client() as conn:

                async def forgotten() -> bool:
                    await store.read(KEY, "b", dims)  # any call reaps
                    return not bool(conn.hexists(seq_key, "a"))

                await eventually(forgotten, "the seq of a sidecar unseen for the bound goes")
            anew = await store.settle(KEY, "a", 5, dims, (1,), (0,), TTL_MS)
            return [first, again, anew]

    first, again, anew = run(scenario)
    assert first.applied and not again.applied and again.used == (1,)
    assert anew.applied and anew.used == (2,)


def test_summed_aggregates_settle_like_usage(redis_server: LocalRedis) -> None:
    dims = (Dimension.TOTAL_TOKENS, CACHED_INPUT_TOKENS, LATENCY_US_SUM)

    async def scenario() -> list[Share]:
        async with connect(redis_server.url) as store:
            first = await store.settle(KEY, "a", 1, dims, (10, 4, 1_234), (0, 0, 0), TTL_MS)
            second = await store.settle(KEY, "b", 1, dims, (5, 1, 766), (0, 0, 0), TTL_MS)
            return [first, second]

    first, second = run(scenario)
    assert first.applied and second.applied  # seqs are per sidecar
    assert second.used == (15, 5, 2_000) and second.lease == (0, 0, 0) and second.sidecars == 0


def test_concurrency_is_a_gauge(redis_server: LocalRedis) -> None:
    dims, caps = (Dimension.CONCURRENCY, Dimension.REQUESTS), (3, 100)

    async def scenario() -> list[Share]:
        async with connect(redis_server.url) as store:
            a = await store.lease(KEY, "a", TTL_MS, dims, caps, (2, 10))
            b = await store.lease(KEY, "b", TTL_MS, dims, caps, (5, 0))
            c = await store.lease(KEY, "c", TTL_MS, dims, caps, (1, 0))
            freed = await store.settle(KEY, "a", 1, dims, (0, 4), (1, 6), TTL_MS)
            c2 = await store.lease(KEY, "c", TTL_MS, dims, caps, (1, 0))
            with pytest.raises(ValueError, match="CONCURRENCY"):
                await store.settle(KEY, "a", 2, dims, (1, 0), (0, 0), TTL_MS)
            return [a, b, c, freed, c2]

    a, b, c, freed, c2 = run(scenario)
    assert a.granted == (2, 10) and b.granted == (1, 0) and c.granted == (0, 0)
    assert c.leased == (3, 10) and c.used == (0, 0) and c.sidecars == 2  # "c" holds nothing
    assert freed.lease == (1, 0) and freed.used == (0, 4) and freed.leased == (2, 0)
    assert c2.granted == (1, 0) and c2.used == (0, 4) and c2.sidecars == 3
    with redis_server.client() as conn:
        used = redis_keys(KEY)[KEY_PARTS.index("used")]
        assert not conn.hexists(used, str(int(Dimension.CONCURRENCY)))


def test_keys_expire_at_the_windows_end_plus_the_grace(redis_server: LocalRedis) -> None:
    dims, caps = (Dimension.TOTAL_TOKENS,), (1_000,)
    with redis_server.client() as conn:
        ends = redis_now_ms(conn) + 3_600_000
    windowed, lifetime = GlobalKey(LEDGER, 7, ends), GlobalKey(LEDGER, 0, None)

    async def scenario() -> None:
        async with connect(redis_server.url) as store:
            for key in (windowed, lifetime):
                await store.lease(key, "a", TTL_MS, dims, caps, (100,))
                await store.settle(key, "a", 1, dims, (10,), (0,), TTL_MS)

    run(scenario)
    with redis_server.client() as conn:
        for name in redis_keys(windowed):
            assert conn.exists(name), name
            assert conn.pexpiretime(name) == ends + KEY_GRACE_MS, name
        for name in redis_keys(lifetime):
            assert conn.exists(name), name
            assert conn.pttl(name) == -1, name  # a lifetime window never expires
    assert KEY_GRACE_MS == 24 * 3600 * 1000


def test_a_windows_keys_share_one_hash_slot_whatever_braces_its_ledger_has(
    redis_server: LocalRedis,
) -> None:
    names = redis_keys(KEY)
    pattern = re.compile(r"budgetd:\{([0-9a-f]{20})\}:(" + "|".join(KEY_PARTS) + r")")
    tags = {m.group(1) for m in map(pattern.fullmatch, names) if m is not None}
    assert len(tags) == 1 and len(names) == len(KEY_PARTS)
    assert len({key_slot(name.encode()) for name in names}) == 1
    assert {key_slot(name.encode()) for name in names} == {key_slot(tags.pop().encode())}
    others = [GlobalKey(LEDGER, KEY.window + 1), GlobalKey("org-daily{tenant=acme2}", KEY.window)]
    assert all(redis_keys(other)[0] != names[0] for other in others)
    assert redis_keys(KEY, "bx:")[0].startswith("bx:{")
    with pytest.raises(ValueError, match="prefix"):
        connect(redis_server.url, prefix="a{b}:")

    async def scenario() -> None:
        async with connect(redis_server.url) as store:
            share = await store.lease(KEY, "a", TTL_MS, DIMS, (1, 1, 1), (1, 1, 1))
            assert share.granted == (1, 1, 1)
            await store.settle(KEY, "a", 1, DIMS, (0, 0, 0), (0, 0, 0), TTL_MS)

    run(scenario)
    with redis_server.client() as conn:
        stored = {name.decode() for name in conn.scan_iter()}
    assert stored and stored <= set(names)  # nothing else is written


def test_heartbeat_keeps_leases_alive_in_one_round_trip(redis_server: LocalRedis) -> None:
    dims, caps = (Dimension.TOTAL_TOKENS,), (1_000,)
    held, other = KEY, GlobalKey(LEDGER, KEY.window + 1)
    expiry = redis_keys(held)[KEY_PARTS.index("expiry")]

    async def scenario() -> tuple[list[bool], Share, Share, list[bool]]:
        async with connect(redis_server.url) as store:
            assert await store.heartbeat([], "a", TTL_MS) == []
            leased = await store.lease(held, "a", SHORT_TTL_MS, dims, caps, (100,))
            beats = await store.heartbeat([held, other], "a", TTL_MS)
            with redis_server.client() as conn:

                async def past_the_first_deadline() -> bool:
                    return redis_now_ms(conn) > leased.now_ms + SHORT_TTL_MS

                await eventually(past_the_first_deadline, "Redis's clock passes the first ttl")
                deadline = conn.zscore(expiry, "a")
            assert deadline is not None and deadline >= leased.now_ms + TTL_MS
            later = await store.read(held, "a", dims)
            none = await store.heartbeat([other], "b", TTL_MS)
            return beats, leased, later, none

    beats, leased, later, none = run(scenario)
    assert beats == [True, False]  # "a" holds nothing on the other window
    assert later.lease == (100,) and later.sidecars == 1 and later.now_ms > leased.now_ms
    assert none == [False]


def test_the_scripts_survive_a_flushed_cache_and_a_redis_restart(
    redis_server: LocalRedis,
) -> None:
    dims, caps = (Dimension.TOTAL_TOKENS,), (1_000,)

    async def scenario() -> list[Share | list[bool]]:
        async with connect(redis_server.url) as store:
            out: list[Share | list[bool]] = [await store.lease(KEY, "a", TTL_MS, dims, caps, (10,))]
            with redis_server.client() as conn:
                conn.script_flush()
            out.append(await store.heartbeat([KEY], "a", TTL_MS))
            with redis_server.client() as conn:
                assert conn.script_exists(HEARTBEAT_SHA) == [True]  # the pipeline loaded it
                conn.script_flush()
            out.append(await store.lease(KEY, "a", TTL_MS, dims, caps, (10,)))
            redis_server.restart()  # no persistence: the window is gone with the cache
            out.append(await store.lease(KEY, "a", TTL_MS, dims, caps, (10,)))
            redis_server.restart()
            out.append(await store.heartbeat([KEY], "a", TTL_MS))
            out.append(await store.settle(KEY, "a", 1, dims, (1,), (0,), TTL_MS))
            return out

    first, beat, again, restarted, beat_after, settled = run(scenario)
    assert isinstance(first, Share) and first.lease == (10,)
    assert beat == [True]
    assert isinstance(again, Share) and again.lease == (20,)
    assert isinstance(restarted, Share) and restarted.lease == (10,) and restarted.used == (0,)
    assert beat_after == [False]  # the second restart lost that lease too
    assert isinstance(settled, Share) and settled.applied and settled.used == (1,)


def test_store_unavailable_while_redis_is_down_and_recovery(redis_server: LocalRedis) -> None:
    dims, caps = (Dimension.TOTAL_TOKENS,), (1_000,)

    async def refused(store: RedisStore) -> list[StoreUnavailable]:
        errors = []
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.lease(KEY, "a", TTL_MS, dims, caps, (1,)),
            lambda: store.settle(KEY, "a", 9, dims, (1,), (0,), TTL_MS),
            lambda: store.read(KEY, "a", dims),
            lambda: store.heartbeat([KEY], "a", TTL_MS),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            errors.append(caught.value)
        return errors

    async def scenario() -> tuple[list[StoreUnavailable], list[StoreUnavailable], Share]:
        async with connect(redis_server.url) as store:
            await store.lease(KEY, "a", TTL_MS, dims, caps, (1,))
            redis_server.stop()
            assert redis_server.refuses()
            stopped = await refused(store)
            redis_server.start()
            await store.lease(KEY, "a", TTL_MS, dims, caps, (1,))
            redis_server.kill()
            killed = await refused(store)
            redis_server.start()
            return stopped, killed, await store.lease(KEY, "a", TTL_MS, dims, caps, (1,))

    stopped, killed, back = run(scenario)
    for error in stopped + killed:
        assert type(error) is StoreUnavailable and error.reason
        assert not isinstance(error, redis.RedisError)
    assert back.granted == (1,)


def test_a_command_timeout_is_store_unavailable(redis_server: LocalRedis) -> None:
    async def scenario() -> StoreUnavailable:
        async with connect(redis_server.url, timeout_s=0.2) as store:
            await store.read(KEY, "a", DIMS)
            os.kill(redis_server.pid, signal.SIGSTOP)  # it accepts, it never answers
            try:
                with pytest.raises(StoreUnavailable) as caught:
                    await store.read(KEY, "a", DIMS)
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)
            assert (await store.read(KEY, "a", DIMS)).sidecars == 0
            return caught.value

    assert "Timeout" in run(scenario).reason


def test_a_wrong_password_is_unavailable_and_never_quoted(
    make_redis: Callable[..., LocalRedis],
) -> None:
    server = make_redis(extra=("--requirepass", "right-pass-42"))

    async def scenario() -> tuple[StoreUnavailable, Share]:
        async with connect(f"redis://:wrong-pass-17@127.0.0.1:{server.port}") as store:
            with pytest.raises(StoreUnavailable) as caught:
                await store.read(KEY, "a", DIMS)
        async with connect(f"redis://default:right-pass-42@127.0.0.1:{server.port}/0") as store:
            return caught.value, await store.lease(KEY, "a", TTL_MS, DIMS, (5, 5, 5), (1, 1, 1))

    error, share = run(scenario)
    assert "wrong-pass-17" not in error.reason and "wrong-pass-17" not in str(error)
    assert share.granted == (1, 1, 1)


def test_a_unix_socket_and_tls_connect_for_real(
    make_redis: Callable[..., LocalRedis], tmp_path: Path
) -> None:
    authority, tls_port = Authority(), free_port()
    cert, key = authority.server().write(tmp_path, "redis")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(authority.pem)
    server = make_redis(
        extra=(
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
        ),
    )  # fmt: skip

    async def scenario() -> list[Share]:
        shares = []
        for url in (server.unix_url, f"rediss://localhost:{tls_port}/0?ssl_ca_certs={ca}"):
            async with connect(url) as store:
                shares.append(await store.lease(KEY, "a", TTL_MS, DIMS, (9, 9, 9), (1, 1, 1)))
        return shares

    unix, tls = run(scenario)
    assert unix.lease == (1, 1, 1) and tls.lease == (2, 2, 2)  # one server, both ways


def test_a_sentinel_url_finds_the_master(make_redis: Callable[..., LocalRedis]) -> None:
    master = make_redis()
    watcher = sentinel(master.home.parent / "sentinel", master)
    try:

        async def scenario() -> Share:
            url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{watcher.port}/{MASTER_NAME}"
            async with connect(url) as store:
                return await store.lease(KEY, "a", TTL_MS, DIMS, (9, 9, 9), (2, 2, 2))

        share = run(scenario)
    finally:
        watcher.stop()
    assert share.lease == (2, 2, 2)
    with master.client() as conn:
        assert conn.exists(redis_keys(KEY)[KEY_PARTS.index("leased")])


def test_a_cluster_url_runs_the_scripts_on_a_cluster(tmp_path: Path) -> None:
    node = cluster_node(tmp_path / "cluster")
    windows = [GlobalKey(f"ledger-{n}{{tenant=t{n}}}", n) for n in range(8)]
    slots = {key_slot(redis_keys(k)[0].encode()) for k in windows}

    async def scenario() -> tuple[list[Share], list[bool], list[bool]]:
        async with connect(f"redis+cluster://127.0.0.1:{node.port}") as store:
            assert isinstance(store.client, RedisCluster)
            leased = [
                await store.lease(k, "a", TTL_MS, DIMS, (9, 9, 9), (1, 1, 1)) for k in windows
            ]
            with node.client() as conn:
                conn.script_flush()
            beats = await store.heartbeat(windows, "a", TTL_MS)
            with node.client() as conn:
                assert conn.script_exists(HEARTBEAT_SHA) == [True]  # the pipeline loaded it
                conn.script_flush()
            leased.append(await store.lease(windows[0], "a", TTL_MS, DIMS, (9, 9, 9), (1, 1, 1)))
            return leased, beats, await store.heartbeat([windows[0], KEY], "a", TTL_MS)

    try:
        leased, beats, more = run(scenario)
    finally:
        node.stop()
    assert len(slots) > 1  # the pipeline spans slots
    assert all(share.lease == (1, 1, 1) for share in leased[:-1]) and leased[-1].lease == (2, 2, 2)
    assert beats == [True] * len(windows) and more == [True, False]


# --- arguments and URLs, no Redis needed ----------------------------------------------


def _store() -> RedisStore:
    return connect("redis://127.0.0.1:1")


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda s: s.lease(KEY, "a", TTL_MS, DIMS, (1, 1), (1, 1, 1)), "caps"),
        (lambda s: s.lease(KEY, "a", TTL_MS, DIMS, (1, 1, 1), (1, -1, 1)), r"wants\[1\]"),
        (lambda s: s.lease(KEY, "a", TTL_MS, DIMS, (1, 1, 1), (1, True, 1)), r"wants\[1\]"),
        (lambda s: s.lease(KEY, "a", 0, DIMS, (1, 1, 1), (1, 1, 1)), "ttl_ms"),
        (lambda s: s.lease(KEY, "a b", TTL_MS, DIMS, (1, 1, 1), (1, 1, 1)), "sidecar"),
        (lambda s: s.lease(KEY, "x" * 129, TTL_MS, DIMS, (1, 1, 1), (1, 1, 1)), "sidecar"),
        (lambda s: s.lease(KEY, "a", TTL_MS, (0, 0), (1, 1), (1, 1)), "dims"),
        (lambda s: s.lease(KEY, "a", TTL_MS, (99,), (1,), (1,)), r"dims\[0\]"),
        (lambda s: s.lease(KEY, "a", TTL_MS, (), (), ()), "dims"),
        (lambda s: s.lease(KEY, "a", TTL_MS, (0,), (2**53,), (1,)), r"caps\[0\]"),
        (lambda s: s.settle(KEY, "a", -1, DIMS, (0, 0, 0), (0, 0, 0), TTL_MS), "seq"),
        (lambda s: s.settle(KEY, "a", 1, DIMS, (0, 0, 0), (0, 0), TTL_MS), "give_back"),
        (lambda s: s.settle(KEY, "a", 1, DIMS, (0, 0), (0, 0, 0), TTL_MS), "used"),
        (lambda s: s.read(GlobalKey("", 0), "a", DIMS), "key.ledger"),
        (lambda s: s.read(GlobalKey("l", -1), "a", DIMS), "key.window"),
        (lambda s: s.read(GlobalKey("l", 0, -5), "a", DIMS), "key.expires_at_ms"),
        (lambda s: s.heartbeat([KEY], "", TTL_MS), "sidecar"),
        (lambda s: s.heartbeat([KEY], "a", 10**12), "ttl_ms"),
    ],
)
def test_bad_arguments_are_refused_before_any_call(
    call: Callable[[RedisStore], Awaitable[object]], named: str
) -> None:
    async def scenario() -> None:
        async with _store() as store:  # nothing listens on port 1: a call would fail
            with pytest.raises(ValueError, match=named):
                await call(store)

    run(scenario)


SECRET = "hunter2-S3cret"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", dict(mode="single", hosts=(("127.0.0.1", 6380),), db=2)),
        ("redis://cache", dict(mode="single", hosts=(("cache", 6379),), db=0)),
        (
            f"redis://bob:{SECRET}@h:1",
            dict(hosts=(("h", 1),), username="bob", password=SECRET),
        ),
        (f"redis://:{SECRET}@[::1]:7000", dict(hosts=(("::1", 7000),), username=None)),
        (
            "rediss://h:6380?ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=false",
            dict(tls=True, options={"ssl_ca_certs": "/etc/ca.pem", "ssl_check_hostname": False}),
        ),
        ("unix:///run/redis.sock?db=3", dict(unix_path="/run/redis.sock", hosts=(), db=3)),
        (f"unix://:{SECRET}@/run/r.sock", dict(unix_path="/run/r.sock", password=SECRET)),
        (
            f"redis+sentinel://u:{SECRET}@s1:26380,s2/mymaster/4?sentinel_password=sp",
            dict(
                mode="sentinel",
                hosts=(("s1", 26380), ("s2", 26379)),
                master="mymaster",
                db=4,
                password=SECRET,
                sentinel_password="sp",
            ),
        ),
        ("rediss+sentinel://s1/m", dict(mode="sentinel", tls=True, master="m", db=0)),
        (
            "redis+cluster://n1:7000,n2:7001,n3",
            dict(mode="cluster", hosts=(("n1", 7000), ("n2", 7001), ("n3", 6379))),
        ),
        ("rediss+cluster://n1:7000/", dict(mode="cluster", tls=True)),
        ("redis://h?socket_timeout=0.5", dict(options={"socket_timeout": 0.5})),
    ],
)
def test_every_url_form_parses(url: str, expected: dict[str, object]) -> None:
    target = parse_url(url)
    for name, value in expected.items():
        assert getattr(target, name) == value, name
    assert SECRET not in repr(target)


def test_connect_builds_the_client_each_form_needs() -> None:
    async def scenario() -> list[object]:
        clients: list[object] = []
        for url in ("redis://h:1", "redis+sentinel://s:1/m", "redis+cluster://n:1"):
            store = connect(url, timeout_s=0.5, connect_timeout_s=0.25)
            clients.append(store.client)
            await store.close()
        return clients

    plain, master, cluster = run(scenario)
    assert isinstance(plain, redis.asyncio.Redis)
    assert isinstance(plain.connection_pool.connection_kwargs["socket_timeout"], float)
    assert plain.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.25
    assert isinstance(master, redis.asyncio.Redis)
    assert isinstance(master.connection_pool, SentinelConnectionPool)
    assert master.connection_pool.service_name == "m"
    assert isinstance(cluster, RedisCluster)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout_s"):
            connect("redis://h", timeout_s=bad)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"{SECRET}@h:1", "scheme"),
        (f"http://u:{SECRET}@h", "scheme"),
        (f"redis://u:{SECRET}@h:99999", "port of host 1"),
        (f"redis://u:{SECRET}@h:port", "port of host 1"),
        (f"redis://u:{SECRET}@", "no host"),
        (f"redis://:{SECRET}@h1,h2", "several hosts"),
        (f"redis://:{SECRET}@h/x", "database"),
        (f"redis://:{SECRET}@h/0/1", "database"),
        (f"redis://:{SECRET}@h/0?db=1", "twice"),
        (f"redis://:{SECRET}@h?{SECRET}=1", "unknown query option"),
        (f"redis://:{SECRET}@h?socket_timeout=soon", "socket_timeout"),
        (f"redis://:{SECRET}@h?ssl_ca_certs=/ca", "TLS"),
        (f"redis://:{SECRET}@h?db=1&db=2", "db"),
        (f"redis://:{SECRET}@[::1:1", "IPv6"),
        (f"redis://:{SECRET}@h o:1", "host 1"),
        (f"redis://:{SECRET}@h:1#frag", "fragment"),
        (f"redis://:p?{SECRET}@h", "query option"),
        (f"unix://:{SECRET}@host/run/r.sock", "no host"),
        (f"unix://:{SECRET}@", "path"),
        (f"redis+sentinel://:{SECRET}@s1,s2", "master"),
        (f"redis+sentinel://:{SECRET}@s1/m/1/2", "path"),
        (f"redis+sentinel://:{SECRET}@s1,/m", "host 2 is empty"),
        (f"redis+cluster://:{SECRET}@n1/3", "Cluster"),
        (f"redis+cluster://:{SECRET}@n1?db=1", "unknown query option"),
    ],
)
def test_a_malformed_url_says_what_is_wrong_never_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        connect(url)
    assert caught.value.args[0].startswith("redis url: ")
    assert SECRET not in str(caught.value)
