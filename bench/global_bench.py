"""Global policies (Redis) against local ones, Redis traffic, and overshoot by slice size.

Real processes only: a redis-server on loopback (bench.redis_peer.RedisServer), budgetd
daemons each with its own config, state directory and socket, load from bench.loadgen
processes (speed) or client threads (overshoot).

1. Speed: one sidecar with a global hard policy and one with the same policy local
   (caps no run reaches), each driven by bench.loadgen at --concurrency; decisions/s
   and p50 / p99 per operation, and the global sidecar's Redis calls per 1,000
   decisions (GetServerInfo.global_info.redis_calls before and after the window).
2. Overshoot: three sidecars sharing one global hard cap on total tokens, at each
   max_slice: on every sidecar two clients Reserve then Commit exactly the estimate and
   two Check then Consume, until each has been denied DENIED_IN_A_ROW times in a row;
   then the sidecars stop (SIGTERM: they settle and give their leases back) and Redis's
   settled total is read. Overshoot = acknowledged total - cap (never below 0); the
   bound = 3 x max_slice x cap; "exact" = Redis's total equals the acknowledged one.

Run: python -m bench.global_bench [--quick] --out bench/results/global.md (and .json)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis as redis_py

from bench.processes import LogReader, Processes
from bench.redis_peer import RedisServer
from budgetd.core.dimensions import Dimension
from budgetd.scaleout.redis_store import GlobalKey, connect
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

OPERATIONS = ("check", "consume", "reserve_commit")
SLICES = (0.001, 0.01, 0.05)
OVERSHOOT_CAP = 200_000
DENIED_IN_A_ROW = 40
HUGE_CAP = 10**12  # never reached by a speed run (the largest cap a policy takes)
TOKENS = int(Dimension.TOTAL_TOKENS)


@dataclass(frozen=True)
class Sidecar:
    process: Any
    log: LogReader
    socket: Path
    pid: int

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"


def _config(policy: str, redis_url: str | None, max_slice: float) -> str:
    head = "embedded_policies = false\n"
    if redis_url is not None:
        head += f'[global]\nredis_url = "{redis_url}"\nmax_slice = {max_slice}\n'
    return head + policy


def _policy(scope: str, cap: int, per: str) -> str:
    return (
        f'[[policies]]\nname = "org"\nscope = "{scope}"\nper = ["{per}"]\n'
        f"caps = {{ total_tokens = {cap} }}\n"
    )


def start_sidecar(processes: Processes, home: Path, name: str, config: str) -> Sidecar:
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"{name}.toml"
    path.write_text(config, encoding="utf-8")
    socket = home / f"{name}.sock"
    argv = [sys.executable, "-m", "budgetd", "--config", str(path), "--socket", str(socket)]
    argv += ["--tcp", "127.0.0.1:0", "--state-dir", str(home / f"{name}-state")]
    argv += ["--log-format", "json"]
    process = processes.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = LogReader(process.stderr, "ready")
    ready = log.wait(process, f"budgetd ({name})")
    return Sidecar(process, log, socket, int(ready.get("pid", process.pid)))


def redis_calls(sidecar: Sidecar) -> int:
    with grpc.insecure_channel(sidecar.target) as channel:
        info = rpc.BudgetAdminServiceStub(channel).GetServerInfo(
            pb.GetServerInfoRequest(), timeout=30
        )
    return int(info.global_info.redis_calls)


def loadgen(sidecar: Sidecar, operation: str, options: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.loadgen", "--target", sidecar.target]
    argv += ["--operation", operation, "--concurrency", str(options.concurrency)]
    argv += ["--duration", str(options.duration), "--warmup", str(options.warmup)]
    argv += ["--server-pid", str(sidecar.pid), "--threads", "100"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def speed(
    processes: Processes, home: Path, url: str, options: argparse.Namespace
) -> list[dict[str, Any]]:
    global_car = start_sidecar(
        processes, home, "global", _config(_policy("global", HUGE_CAP, "agent"), url, 0.01)
    )
    local_car = start_sidecar(
        processes, home, "local", _config(_policy("local", HUGE_CAP, "agent"), None, 0.01)
    )
    rows = []
    for operation in OPERATIONS:
        local = loadgen(local_car, operation, options)
        before = redis_calls(global_car)
        shared = loadgen(global_car, operation, options)
        calls = redis_calls(global_car) - before
        # The loadgen's warm-up is outside its window; the calls cover both.
        decisions = shared["decisions_per_s"] * (options.duration + options.warmup)
        rows.append(
            {
                "operation": operation,
                "local_decisions_per_s": local["decisions_per_s"],
                "global_decisions_per_s": shared["decisions_per_s"],
                "local_p50_us": local["p50_us"],
                "global_p50_us": shared["p50_us"],
                "local_p99_us": local["p99_us"],
                "global_p99_us": shared["p99_us"],
                "redis_calls": calls,
                "redis_calls_per_1000": calls / max(decisions, 1) * 1000,
                "errors": local["errors"] + shared["errors"],
            }
        )
    for car in (global_car, local_car):
        processes.stop(car.process)
    return rows


class Client(threading.Thread):
    """One agent on one sidecar: asks first, spends what it was told it may."""

    def __init__(self, target: str, number: int, reserve: bool) -> None:
        super().__init__(daemon=True)
        self.stub = rpc.BudgetServiceStub(grpc.insecure_channel(target))
        self.number, self.reserve, self.spent = number, reserve, 0

    def run(self) -> None:
        labels, denied, n = {"tenant": "t"}, 0, 0
        while denied < DENIED_IN_A_ROW:
            n += 1
            tokens = 1 + (n * 37 + self.number * 11) % 200
            rid = f"c{self.number}-{n}"
            if self._ask(labels, tokens, rid):
                self.spent += tokens
                denied = 0
            else:
                denied += 1
                time.sleep(0.01)

    def _ask(self, labels: dict[str, str], tokens: int, rid: str) -> bool:
        usage = pb.Usage(input_tokens=tokens)
        if self.reserve:
            held = self.stub.Reserve(
                pb.ReserveRequest(request_id=rid, labels=labels, estimate=usage), timeout=30
            )
            if held.decision == pb.DECISION_DENY:
                return False
            commit = pb.CommitRequest(
                request_id=rid + "k", reservation_id=held.reservation_id, actual=usage
            )
            self.stub.Commit(commit, timeout=30)
            return True
        check = self.stub.Check(pb.CheckRequest(labels=labels, estimate=usage), timeout=30)
        if check.decision == pb.DECISION_DENY:
            return False
        self.stub.Consume(pb.ConsumeRequest(request_id=rid, labels=labels, usage=usage), timeout=30)
        return True


def redis_total(url: str) -> int:
    async def read() -> int:
        async with connect(url) as store:
            share = await store.read(GlobalKey("org{tenant=t}", 0, None), "bench", [TOKENS])
        return share.used[0]

    return asyncio.run(read())


def overshoot(
    processes: Processes, home: Path, redis: RedisServer, max_slice: float
) -> dict[str, Any]:
    url = f"redis://127.0.0.1:{redis.port}"
    redis_py.Redis(port=redis.port).flushall()  # (each slice size starts from nothing)
    config = _config(_policy("global", OVERSHOOT_CAP, "tenant"), url, max_slice)
    cars = [start_sidecar(processes, home / f"s{max_slice}", f"car{i}", config) for i in range(3)]
    clients = [Client(car.target, 4 * i + k, k < 2) for i, car in enumerate(cars) for k in range(4)]
    began = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=600)
    seconds = time.monotonic() - began
    calls = sum(redis_calls(car) for car in cars)
    for car in cars:
        processes.stop(car.process)  # SIGTERM: settle, give every lease back
    total = sum(client.spent for client in clients)
    settled = redis_total(url)
    return {
        "max_slice": max_slice,
        "cap": OVERSHOOT_CAP,
        "acknowledged": total,
        "redis_total": settled,
        "exact": settled == total,
        "overshoot": max(0, total - OVERSHOOT_CAP),
        "bound": 3 * int(OVERSHOOT_CAP * max_slice),
        "redis_calls": calls,
        "seconds": seconds,
    }


def table(speed_rows: list[dict[str, Any]], over_rows: list[dict[str, Any]], quick: bool) -> str:
    lines = [
        f"# Global policies (Redis) vs local — {'quick' if quick else 'full'} run, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| operation | local decisions/s | global decisions/s | local p50 µs | global p50 µs "
        "| local p99 µs | global p99 µs | Redis calls / 1,000 decisions |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in speed_rows:
        lines.append(
            f"| {r['operation']} | {r['local_decisions_per_s']:,.0f} "
            f"| {r['global_decisions_per_s']:,.0f} | {r['local_p50_us']:,.0f} "
            f"| {r['global_p50_us']:,.0f} | {r['local_p99_us']:,.0f} "
            f"| {r['global_p99_us']:,.0f} | {r['redis_calls_per_1000']:.2f} |"
        )
    lines += [
        "",
        "| max_slice | cap | acknowledged | Redis total | exact | overshoot | bound "
        "| Redis calls | seconds |",
        "|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for r in over_rows:
        lines.append(
            f"| {r['max_slice']} | {r['cap']:,} | {r['acknowledged']:,} | {r['redis_total']:,} "
            f"| {'yes' if r['exact'] else 'NO'} | {r['overshoot']:,} | {r['bound']:,} "
            f"| {r['redis_calls']:,} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short windows, one slice size")
    parser.add_argument("--out", type=Path, default=Path("bench/results/global.md"))
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args(argv)
    options.duration, options.warmup = (0.5, 0.3) if options.quick else (5.0, 1.0)
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="budgetd-global-bench-") as temp:
        home = Path(temp)
        (home / "redis").mkdir()
        redis = RedisServer(home / "redis")
        try:
            url = f"redis://127.0.0.1:{redis.port}"
            speed_rows = speed(processes, home, url, options)
            slices = SLICES[1:2] if options.quick else SLICES
            over_rows = [overshoot(processes, home, redis, s) for s in slices]
        finally:
            processes.stop_all()
            redis.stop()
    report = table(speed_rows, over_rows, options.quick)
    print(report, end="")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(report, encoding="utf-8")
    data = {"speed": speed_rows, "overshoot": over_rows}
    options.out.with_suffix(".json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
