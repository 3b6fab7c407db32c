"""Global policies end to end: real budgetd sidecars sharing caps through a real Redis.

Goal: three sidecar processes (each its own state directory, socket and journal) under
concurrent load from several client processes against one global hard cap never grant
more than the cap plus the bound (a slice per live sidecar), and once they stopped the
Redis totals equal the sum of every acknowledged usage; a sidecar killed with SIGKILL
mid-load gives its slice back when its lease expires and, restarted from its journal,
neither loses nor double-counts what it acknowledged; a Redis restart mid-load turns the
health service `budgetd.global` NOT_SERVING (the daemon itself stays SERVING) and the
usage recorded meanwhile settles exactly once; a calendar window rolls at the same
instant on every sidecar and each window's total is exact; a global concurrency cap of
10 across three sidecars is never exceeded.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.core.dimensions import Dimension
from budgetd.scaleout.redis_store import GlobalKey, connect
from budgetd.scaleout.redis_store import Share as Window
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc
from tests.e2e.support import REPO, WAIT_S, Daemon, whole_lines
from tests.redis_server import LocalRedis, require_redis_server
from tests.waiting import wait_until

TOKENS = int(Dimension.TOTAL_TOKENS)
SLOTS = int(Dimension.CONCURRENCY)
ORG_KEY = "org{tenant=t}"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CLIENT_LIMIT_S = 180.0  # a client process that runs longer than this has hung


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedis]:
    """One redis-server on loopback with an append-only file (a restart keeps totals)."""
    try:
        require_redis_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    server = LocalRedis(tmp_path / "redis", persistent=True)
    yield server
    server.stop()


# Every process a test of this module started: stopped when the test ends, passed or
# not, so a failed test leaves nothing running into the next.
_started: list[subprocess.Popen[bytes] | Daemon] = []


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if isinstance(process, Daemon):
            process.kill()
        elif process.poll() is None:
            process.kill()
            process.wait()


def sidecar_config(home: Path, url: str, policy: str, **scaleout: object) -> Path:
    settings = {
        "redis_url": url,
        "sync_interval_seconds": 0.05,
        "lease_ttl_seconds": 2,
        "timeout_seconds": 0.3,
        **scaleout,
    }
    lines = ["embedded_policies = false", "[global]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    lines += ["[[policies]]", policy]
    home.mkdir(parents=True, exist_ok=True)
    path = home / "budgetd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def org_policy(cap: int) -> str:
    return f'name = "org"\nscope = "global"\nper = ["tenant"]\ncaps = {{ total_tokens = {cap} }}'


def start_sidecars(
    tmp_path: Path, url: str, policy: str, count: int = 3, **scaleout: object
) -> list[Daemon]:
    homes = [tmp_path / f"sidecar{i}" for i in range(count)]
    configs = [sidecar_config(home, url, policy, **scaleout) for home in homes]
    started = [Daemon(home, ["--config", str(c)]) for home, c in zip(homes, configs, strict=True)]
    _started.extend(started)
    return [daemon.start() for daemon in started]


def restart(daemon: Daemon) -> Daemon:
    config = daemon.home / "budgetd.toml"
    again = Daemon(daemon.home, ["--config", str(config)])
    _started.append(again)
    return again.start()


def start_clients(
    daemons: list[Daemon], per: int, ops: int, logs: Path, mode: str = "tokens", until: str = ""
) -> list[subprocess.Popen[bytes]]:
    logs.mkdir(exist_ok=True)
    clients = []
    for number in range(len(daemons) * per):
        daemon = daemons[number % len(daemons)]
        args = [daemon.unix_target, "7", str(number), str(ops), str(logs / f"c{number}.jsonl")]
        args += [mode, *([until] if until else [])]
        command = [sys.executable, "-m", "tests.e2e.global_client", *args]
        clients.append(subprocess.Popen(command, cwd=REPO))
    _started.extend(clients)
    return clients


def finish(clients: list[subprocess.Popen[bytes]]) -> None:
    for client in clients:
        assert client.wait(timeout=CLIENT_LIMIT_S) == 0


def records(logs: Path) -> list[dict[str, Any]]:
    """The clients' answers so far (a client may be writing one while this reads)."""
    found = []
    for path in sorted(logs.glob("*.jsonl")):
        found += [json.loads(line) for line in whole_lines(path)]
    return found


def acknowledged(logs: Path) -> int:
    return sum(r["tokens"] for r in records(logs) if r["op"] in ("commit", "consume"))


def read_window(url: str, key: GlobalKey, dims: list[int]) -> Window:
    async def read() -> Window:
        async with connect(url) as store:
            return await store.read(key, "test-reader", dims)

    return asyncio.run(read())


def health_of(daemon: Daemon, service: str) -> int:
    with grpc.insecure_channel(daemon.unix_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S)
        return int(answer.status)


def share_of(daemon: Daemon, key: str) -> pb.LedgerStatus:
    with grpc.insecure_channel(daemon.unix_target) as channel:
        stub = rpc.BudgetServiceStub(channel)
        answer: pb.GetLedgerResponse = stub.GetLedger(pb.GetLedgerRequest(key=key), timeout=WAIT_S)
        return answer.ledger


def progressed(logs: Path, lines: int) -> Callable[[], bool]:
    return lambda: sum(1 for r in records(logs) if r["op"] in ("commit", "consume")) >= lines


def budgetctl(daemon: Daemon, *args: str) -> str:
    command = [sys.executable, "-m", "budgetd_client.ctl", "--target", daemon.unix_target]
    done = subprocess.run(
        [*command, *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # (one line: a table may wrap)


def stop_all(daemons: list[Daemon]) -> None:
    for daemon in daemons:
        assert daemon.stop() == 0, daemon.log_text()


def test_three_sidecars_under_load_never_pass_the_cap_plus_the_bound(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    cap, max_slice = 60_000, 0.01
    bound = 3 * int(cap * max_slice)
    daemons = start_sidecars(tmp_path, redis_server.url, org_policy(cap), max_slice=max_slice)
    # The first call on a new global ledger waits for its first lease, not denied.
    with grpc.insecure_channel(daemons[0].unix_target) as channel:
        stub = rpc.BudgetServiceStub(channel)
        usage = pb.Usage(input_tokens=5)
        first = pb.CheckRequest(labels={"tenant": "fresh"}, estimate=usage)
        assert stub.Check(first, timeout=WAIT_S).decision == pb.DECISION_ALLOW
        held = pb.ReserveRequest(request_id="r0", labels={"tenant": "new"}, estimate=usage)
        assert stub.Reserve(held, timeout=WAIT_S).decision == pb.DECISION_ALLOW
    logs = tmp_path / "logs"
    finish(start_clients(daemons, per=2, ops=3000, logs=logs))
    shares = [share_of(daemon, ORG_KEY).share for daemon in daemons]
    info = budgetctl(daemons[0], "info")
    ledger = budgetctl(daemons[0], "ledger", ORG_KEY)
    stop_all(daemons)  # each settles and gives its lease back
    total = acknowledged(logs)
    window = read_window(redis_server.url, GlobalKey(ORG_KEY, 0, None), [TOKENS])
    assert total <= cap + bound
    assert total >= cap * 9 // 10  # the cap was spent, but for the crumbs
    assert window.used[0] == total  # every acknowledged token settled, once
    assert window.leased[0] == 0 and window.sidecars == 0  # every lease given back
    for share in shares:  # GetLedger of a global ledger: global used, own lease, bound
        # (the bound counts the sidecars holding a lease: with the cap spent, fewer do)
        assert 1 <= share.sidecars <= 3 and share.reachable
        (tokens,) = share.dimensions
        assert tokens.dimension == pb.DIMENSION_TOTAL_TOKENS
        assert tokens.bound == share.sidecars * int(cap * max_slice)
        assert tokens.global_used >= cap * 9 // 10
    # budgetctl tells an operator the same: the link, and the ledger's share.
    assert f"{redis_server.url} (reachable)" in info and "Redis calls" in info
    assert "shared through Redis (reachable)" in ledger
    assert all(column in ledger for column in ("GLOBAL USED", "LEASE LEFT", "BOUND"))


def test_a_killed_sidecar_and_a_redis_restart_lose_nothing_and_count_nothing_twice(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    url = redis_server.url
    daemons = start_sidecars(tmp_path, url, org_policy(50_000_000))
    logs = tmp_path / "logs"
    clients = start_clients(daemons, per=2, ops=600, logs=logs)
    key = GlobalKey(ORG_KEY, 0, None)
    wait_until(progressed(logs, 300), "load under way")

    daemons[0].kill()  # SIGKILL: no give-back, no final snapshot
    wait_until(
        lambda: read_window(url, key, [TOKENS]).sidecars == 2,
        "the killed sidecar's lease expires in Redis",
    )
    daemons[0] = restart(daemons[0])  # from its journal; its clients retry meanwhile
    wait_until(progressed(logs, 900), "load under way again")

    redis_server.stop()
    wait_until(
        lambda: all(health_of(d, "budgetd.global") == NOT_SERVING for d in daemons),
        "every sidecar reports the link down",
    )
    assert all(health_of(d, "") == SERVING for d in daemons)  # the daemon is not down
    done_before = sum(1 for r in records(logs) if r["op"] in ("commit", "consume"))
    wait_until(progressed(logs, done_before + 100), "usage recorded while Redis is down")
    redis_server.start()
    wait_until(
        lambda: all(health_of(d, "budgetd.global") == SERVING for d in daemons),
        "every sidecar reports the link back",
    )
    finish(clients)
    stop_all(daemons)
    window = read_window(url, key, [TOKENS])
    assert window.used[0] == acknowledged(logs)
    assert window.leased[0] == 0
    assert "global sync failed" not in daemons[0].log_text()  # (the restart's shares too)


def test_a_global_concurrency_cap_of_10_holds_across_three_sidecars(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    policy = 'name = "runs"\nscope = "global"\nper = ["tenant"]\ncaps = { concurrency = 10 }'
    daemons = start_sidecars(tmp_path, redis_server.url, policy, max_slice=0.2, min_slice=0.1)
    logs = tmp_path / "logs"
    finish(start_clients(daemons, per=4, ops=60, logs=logs, mode="runs"))
    stop_all(daemons)
    runs = [r for r in records(logs) if r["op"] == "run"]
    edges = sorted([(r["since"], 1) for r in runs] + [(r["until"], -1) for r in runs])
    open_now = highest = 0
    for _, step in edges:  # (at a tie the close sorts first: never counted high)
        open_now += step
        highest = max(highest, open_now)
    window = read_window(redis_server.url, GlobalKey("runs{tenant=t}", 0, None), [SLOTS])
    assert highest <= 10
    assert len(runs) >= 100  # the slots moved between sidecars as runs ended
    assert window.leased[0] == 0  # every slot given back


def test_a_calendar_window_rolls_at_the_same_instant_on_every_sidecar(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    url = redis_server.url
    policy = (
        'name = "org"\nscope = "global"\nper = ["tenant"]\n'
        'caps = { total_tokens = 50000000 }\nwindow = { kind = "calendar", unit = "minute" }'
    )
    daemons = start_sidecars(tmp_path, url, policy, count=2)
    boundary = (int(time.time()) // 60 + 1) * 60  # the next minute, UTC
    logs = tmp_path / "logs"
    clients = start_clients(daemons, per=1, ops=10**6, logs=logs, until=str(boundary + 2))
    finish(clients)
    old, new = GlobalKey(ORG_KEY, boundary - 60, None), GlobalKey(ORG_KEY, boundary, None)

    def everyone_sees_the_new_window_whole() -> bool:
        used = read_window(url, new, [TOKENS]).used[0]
        ledgers = [share_of(daemon, ORG_KEY) for daemon in daemons]
        return all(
            ledger.window_start.seconds == boundary
            and ledger.totals.total_tokens == used
            and ledger.share.dimensions[0].unsettled == 0
            for ledger in ledgers
        )

    wait_until(everyone_sees_the_new_window_whole, "both sidecars in the new window, synced")
    stop_all(daemons)
    before, after = read_window(url, old, [TOKENS]), read_window(url, new, [TOKENS])
    assert before.used[0] > 0 and after.used[0] > 0
    assert before.used[0] + after.used[0] == acknowledged(logs)


def test_checks_that_wait_for_no_lease_open_their_global_ledgers_batched_or_not(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    (daemon,) = start_sidecars(
        tmp_path, redis_server.url, org_policy(1_000_000), count=1, lease_wait_seconds=0
    )

    def check(tenant: str) -> pb.CheckResponse:
        request = pb.CheckRequest(labels={"tenant": tenant}, estimate=pb.Usage(input_tokens=10))
        with grpc.insecure_channel(daemon.unix_target) as channel:
            answer: pb.CheckResponse = rpc.BudgetServiceStub(channel).Check(request, timeout=WAIT_S)
        return answer

    def batch_check(tenant: str) -> pb.CheckResponse:
        check = pb.CheckRequest(labels={"tenant": tenant}, estimate=pb.Usage(input_tokens=10))
        request = pb.BatchRequest(operations=[pb.BatchOperation(check=check)])
        with grpc.insecure_channel(daemon.unix_target) as channel:
            answer: pb.BatchResponse = rpc.BudgetServiceStub(channel).Batch(request, timeout=WAIT_S)
        return answer.results[0].check

    def allowed(ask: Callable[[str], pb.CheckResponse], tenant: str) -> Callable[[], bool]:
        return lambda: ask(tenant).decision == pb.DECISION_ALLOW

    try:
        for ask, tenant in ((check, "one"), (batch_check, "two")):
            first = ask(tenant)  # no lease yet, and no wait for one
            assert first.decision == pb.DECISION_DENY
            assert [b.reason for b in first.blockers] == [pb.BLOCK_REASON_LEASE]
            wait_until(allowed(ask, tenant), f"a Check of {tenant} allowed once leased for")
    finally:
        stop_all([daemon])
