"""Global policies (Redis) against local ones: speed, Redis traffic, overshoot by slice size.

Real processes only, on loopback: a redis-server on a free port (bench.redis_peer's
RedisServer), `python -m budgetd` sidecars each with its own config file, state
directory and Unix socket (started as tests/e2e/support.py starts them, stopped with
SIGTERM), and load from processes or threads of their own through the generated stubs
(budgetd.v1.budget_pb2 / budget_pb2_grpc).

1. Speed. One sidecar whose config holds two hard policies with the same cap (one no
   run reaches) and the same `per = ["tenant"]`, one `scope = "global"` matching the
   label scope=g, one local matching scope=l: both are judged by the same process, with
   the same settings, so the difference is the policy's scope alone. Each cell is one
   load process (`python -m bench.global_bench load ...`, a closed loop of
   --concurrency callers on grpc.aio) doing Check, Reserve then Commit, or Consume on
   one scope's ledger; over one window it measures decisions/s, p50 / p99, the
   daemon's CPU per decision (/proc) and the daemon's Redis calls
   (GetServerInfo.global_info.redis_calls at both ends). Cells run --repetitions
   times, the order rotated, global and local back to back.
2. Overshoot. Three sidecars sharing one global hard cap on total tokens, at each
   [global] max_slice: on every sidecar two client threads Reserve an estimate then
   Commit exactly it, and two Check an amount then Consume it (Consume always records),
   until each has been denied DENIED_IN_A_ROW times in a row (or the deadline passed).
   Then the sidecars stop with SIGTERM (they settle and give their leases back) and
   Redis's settled total is read. Overshoot = max(0, acknowledged - cap); the bound =
   3 x max_slice x cap (a slice per sidecar); "exact" = Redis's settled total equals
   the acknowledged one.

Run: python -m bench.global_bench [--quick] [--out bench/results/global.md] (also .json)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench import procstat
from bench.histogram import Histogram
from bench.processes import LogReader, Processes
from bench.redis_peer import RedisServer
from budgetd.core.dimensions import Dimension
from budgetd.scaleout.redis_store import GlobalKey, connect
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

OPERATIONS = ("check", "reserve_commit", "consume")
SCOPES = ("global", "local")
SCOPE_LABEL = {"global": "g", "local": "l"}
SLICES = (0.001, 0.01, 0.05)
CAP = 200_000
HUGE_CAP = 10**12  # the speed cells' cap: never reached, so nothing is denied
USAGE = pb.Usage(input_tokens=120, output_tokens=80, model="gpt-4o")
SIDECARS = 3
CLIENTS_PER_SIDECAR = 4  # the first half Reserve+Commit, the rest Check+Consume
DENIED_IN_A_ROW = 40
# After a denial: the leaser's next round (every 0.1 s) may bring a slice back.
DENIED_PAUSE_S = 0.01
CALL_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0  # a sidecar's drain: settle and give back (bounded by the daemon)
TOKENS = int(Dimension.TOTAL_TOKENS)


# --- sidecars -----------------------------------------------------------------------------


@dataclass
class Sidecar:
    process: subprocess.Popen[str]
    log: LogReader
    socket: Path
    pid: int = 0
    core: str = "?"

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"


def _global_table(url: str, max_slice: float, prefix: str) -> str:
    # sync_interval_seconds written out at its default: the Redis calls are read at it.
    return (
        "embedded_policies = false\n\n[global]\n"
        f'redis_url = "{url}"\nkey_prefix = "{prefix}"\nmax_slice = {max_slice}\n'
        "sync_interval_seconds = 0.1\n"
    )


def _policy(name: str, scope: str, cap: int, match: str | None) -> str:
    where = f'match = {{ scope = "{match}" }}\n' if match else ""
    return (
        f'\n[[policies]]\nname = "{name}"\nscope = "{scope}"\n{where}per = ["tenant"]\n'
        f"caps = {{ total_tokens = {cap} }}\n"
    )


def speed_config(url: str) -> str:
    """Two hard policies alike but for their scope, told apart by the label `scope`."""
    return (
        _global_table(url, 0.01, "speed:")
        + _policy("org-global", "global", HUGE_CAP, SCOPE_LABEL["global"])
        + _policy("org-local", "local", HUGE_CAP, SCOPE_LABEL["local"])
    )


def spawn(processes: Processes, home: Path, name: str, config: str) -> Sidecar:
    """Start a sidecar without waiting for it (`ready` waits): several start at once."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"{name}.toml"
    path.write_text(config, encoding="utf-8")
    socket = home / f"{name}.sock"
    argv = [sys.executable, "-m", "budgetd", "--config", str(path), "--socket", str(socket)]
    argv += ["--tcp", "127.0.0.1:0", "--state-dir", str(home / f"{name}-state")]
    argv += ["--log-format", "json"]
    process = processes.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return Sidecar(process, LogReader(process.stderr, "ready"), socket)


def ready(sidecar: Sidecar) -> Sidecar:
    record = sidecar.log.wait(sidecar.process, f"budgetd ({sidecar.socket.stem})")
    sidecar.pid = int(record.get("pid", sidecar.process.pid))
    sidecar.core = str(record.get("core", "?"))
    return sidecar


def drain(processes: Processes, sidecar: Sidecar) -> int:
    """SIGTERM, the whole log read, and the Redis calls the daemon made in all (its
    drain's final settle and give-back included): a drain that did not give its
    leases back would leave Redis's total short, so it fails the run."""
    sidecar.process.send_signal(signal.SIGTERM)
    code = sidecar.process.wait(timeout=STOP_TIMEOUT_S)
    sidecar.log.join()  # before the pipe is closed: the last lines are the drain's
    given = sidecar.log.first("leases given back")
    processes.stop(sidecar.process)
    if code != 0 or given is None:
        raise RuntimeError(f"sidecar {sidecar.socket.stem} exit {code}: {sidecar.log.lines[-3:]}")
    return int(given["redis_calls"])


# --- the load process of a speed cell ----------------------------------------------------


@dataclass
class LoadSpec:
    target: str
    operation: str
    scope: str
    concurrency: int
    warmup: float
    duration: float
    server_pid: int
    prefix: str  # request ids unique across cells on one daemon


@dataclass
class Tally:
    histogram: Histogram = field(default_factory=Histogram)
    decisions: int = 0
    errors: int = 0
    error_sample: str = ""
    measuring: bool = False
    stopping: bool = False


async def _decide(stub: Any, spec: LoadSpec, labels: dict[str, str], rid: str) -> None:
    """One decision: a Check, a Reserve and the Commit of its hold, or a Consume. A
    denial is an error here: the cap is one no cell reaches."""
    if spec.operation == "check":
        answer = await stub.Check(pb.CheckRequest(labels=labels, estimate=USAGE))
        if answer.decision == pb.DECISION_DENY:
            raise RuntimeError("check denied")
    elif spec.operation == "consume":
        await stub.Consume(pb.ConsumeRequest(request_id=rid, labels=labels, usage=USAGE))
    else:
        held = await stub.Reserve(pb.ReserveRequest(request_id=rid, labels=labels, estimate=USAGE))
        if held.decision == pb.DECISION_DENY:
            raise RuntimeError("reserve denied")
        commit = pb.CommitRequest(
            request_id=rid + "k", reservation_id=held.reservation_id, actual=USAGE
        )
        await stub.Commit(commit)


async def _caller(stub: Any, spec: LoadSpec, number: int, tally: Tally) -> None:
    """Closed loop: the next decision as soon as the last was answered."""
    labels = {"tenant": "t", "scope": SCOPE_LABEL[spec.scope]}
    clock, n = time.perf_counter_ns, 0
    while not tally.stopping:
        n += 1
        began = clock()
        try:
            await _decide(stub, spec, labels, f"{spec.prefix}-{number}-{n}")
        except (grpc.aio.AioRpcError, RuntimeError) as error:
            tally.errors += tally.measuring
            tally.error_sample = tally.error_sample or str(error)[:300]
            await asyncio.sleep(0.001)  # a daemon refusing everything is not spun on
            continue
        if tally.measuring:
            tally.histogram.record(clock() - began)
            tally.decisions += 1


async def _mark(admin: Any, pid: int) -> dict[str, float]:
    info = await admin.GetServerInfo(pb.GetServerInfoRequest(), timeout=CALL_TIMEOUT_S)
    return {
        "at": time.perf_counter(),
        "server_cpu": procstat.cpu_seconds(pid),
        "own_cpu": time.process_time(),
        "machine": procstat.machine_busy_seconds(),
        "redis_calls": float(info.global_info.redis_calls),
    }


def _window(tally: Tally, start: dict[str, float], end: dict[str, float]) -> dict[str, Any]:
    seconds = end["at"] - start["at"]
    server_cpu = end["server_cpu"] - start["server_cpu"]
    own_cpu = end["own_cpu"] - start["own_cpu"]
    decisions = max(tally.decisions, 1)
    calls = int(end["redis_calls"] - start["redis_calls"])
    return {
        "seconds": seconds,
        "decisions": tally.decisions,
        "decisions_per_s": tally.decisions / seconds,
        "p50_us": tally.histogram.percentile_us(0.50),
        "p99_us": tally.histogram.percentile_us(0.99),
        "server_cpu_us_per_decision": server_cpu / decisions * 1e6,
        "redis_calls": calls,
        "redis_calls_per_1000": calls / decisions * 1000,
        "own_busy": own_cpu / seconds,
        "others_busy": max(0.0, end["machine"] - start["machine"] - server_cpu - own_cpu) / seconds,
        "errors": tally.errors,
        "error_sample": tally.error_sample,
    }


async def drive(spec: LoadSpec) -> dict[str, Any]:
    """Warm up, measure one window, stop every caller; the window's figures."""
    channel = grpc.aio.insecure_channel(spec.target)
    await asyncio.wait_for(channel.channel_ready(), timeout=CALL_TIMEOUT_S)
    stub, admin = rpc.BudgetServiceStub(channel), rpc.BudgetAdminServiceStub(channel)
    tally = Tally()
    tasks = [asyncio.create_task(_caller(stub, spec, n, tally)) for n in range(spec.concurrency)]
    await asyncio.sleep(spec.warmup)
    start = await _mark(admin, spec.server_pid)
    tally.measuring = True
    await asyncio.sleep(spec.duration)
    tally.measuring = False
    end = await _mark(admin, spec.server_pid)
    tally.stopping = True
    await asyncio.wait(tasks, timeout=CALL_TIMEOUT_S)
    await channel.close(grace=None)
    head = {"operation": spec.operation, "scope": spec.scope, "concurrency": spec.concurrency}
    return head | _window(tally, start, end)


def load_main(argv: Sequence[str]) -> int:
    target, operation, scope, concurrency, warmup, duration, pid, prefix = argv
    spec = LoadSpec(
        target, operation, scope, int(concurrency), float(warmup), float(duration), int(pid), prefix
    )
    print(json.dumps(uvloop.run(drive(spec))), flush=True)
    return 0


# --- 1. speed: global vs local on one sidecar --------------------------------------------


def run_cell(
    processes: Processes, car: Sidecar, operation: str, scope: str, options: argparse.Namespace
) -> dict[str, Any]:
    """One cell in a load process of its own (it never shares the bench's GIL)."""
    prefix = f"{operation}-{scope}-{time.time_ns()}"
    argv = [sys.executable, "-m", "bench.global_bench", "load", car.target, operation, scope]
    argv += [str(options.concurrency), str(options.warmup), str(options.duration)]
    argv += [str(car.pid), prefix]
    load = processes.start(argv, stdout=subprocess.PIPE)
    out, _ = load.communicate(timeout=options.warmup + options.duration + 120)
    processes.stop(load)
    if load.returncode != 0:
        raise RuntimeError(f"load process for {operation}/{scope} exited {load.returncode}")
    cell: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return cell


def _prime(car: Sidecar) -> None:
    """One Consume on each scope's ledger: every cell measures ledgers that exist (a
    Check of a ledger that does not exist yet takes another, slower path)."""
    with grpc.insecure_channel(car.target) as channel:
        stub = rpc.BudgetServiceStub(channel)
        for scope, label in SCOPE_LABEL.items():
            labels = {"tenant": "t", "scope": label}
            request = pb.ConsumeRequest(request_id=f"prime-{scope}", labels=labels, usage=USAGE)
            stub.Consume(request, timeout=CALL_TIMEOUT_S)


def speed(
    processes: Processes, home: Path, url: str, options: argparse.Namespace
) -> tuple[list[dict[str, Any]], str]:
    """Every cell of every repetition; the operations' order rotates each repetition,
    and which scope goes first alternates, so a slow minute does not fall on one side."""
    car = ready(spawn(processes, home / "speed", "speed", speed_config(url)))
    cells = []
    try:
        _prime(car)
        for rep in range(options.repetitions):
            shift = rep % len(OPERATIONS)
            for i, operation in enumerate(OPERATIONS[shift:] + OPERATIONS[:shift]):
                order = SCOPES if (rep + i) % 2 == 0 else SCOPES[::-1]
                for scope in order:
                    cell = run_cell(processes, car, operation, scope, options)
                    cells.append({"repetition": rep, **cell})
                    print(_cell_line(cell), file=sys.stderr, flush=True)
    finally:
        drain(processes, car)
    return cells, car.core


def _cell_line(cell: dict[str, Any]) -> str:
    return (
        f"  {cell['operation']:<15} {cell['scope']:<6} {cell['decisions_per_s']:>8,.0f}/s "
        f"p50 {cell['p50_us'] / 1000:.2f} ms, {cell['redis_calls']} Redis calls"
    )


def _row(
    operation: str, scope: str, own: list[dict[str, Any]], ratios: list[float]
) -> dict[str, Any]:
    rates = [c["decisions_per_s"] for c in own]

    def median(key: str) -> float:
        return float(statistics.median(c[key] for c in own))

    return {
        "operation": operation,
        "scope": scope,
        "decisions_per_s": statistics.median(rates),
        "decisions_per_s_min": min(rates),
        "decisions_per_s_max": max(rates),
        "vs_local": statistics.median(ratios) if scope == "global" and ratios else 1.0,
        "vs_local_min": min(ratios) if scope == "global" and ratios else 1.0,
        "vs_local_max": max(ratios) if scope == "global" and ratios else 1.0,
        "p50_us": median("p50_us"),
        "p99_us": median("p99_us"),
        "server_cpu_us_per_decision": median("server_cpu_us_per_decision"),
        "redis_calls_per_1000": median("redis_calls_per_1000"),
        "errors": sum(c["errors"] for c in own),
    }


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per operation and scope: medians over the repetitions, and the global / local
    ratio of decisions/s taken within each repetition (seconds apart, so a slow minute
    moves both sides of it)."""
    rows = []
    for operation in OPERATIONS:
        mine = {(c["repetition"], c["scope"]): c for c in cells if c["operation"] == operation}
        ratios = [
            cell["decisions_per_s"] / max(mine[(rep, "local")]["decisions_per_s"], 1e-9)
            for (rep, scope), cell in mine.items()
            if scope == "global" and (rep, "local") in mine
        ]
        for scope in SCOPES:
            own = [c for (_, s), c in mine.items() if s == scope]
            rows.append(_row(operation, scope, own, ratios))
    return rows


# --- 2. overshoot: three sidecars, one global cap -----------------------------------------


class Client(threading.Thread):
    """One agent on one sidecar: asks first (Reserve, or Check), then spends exactly
    what it asked for; stops once denied DENIED_IN_A_ROW times in a row (the cap is
    spent) or at the deadline. `spent` is what its sidecar acknowledged recording."""

    def __init__(self, target: str, number: int, reserve: bool, deadline: float) -> None:
        super().__init__(daemon=True, name=f"client-{number}")
        self.channel = grpc.insecure_channel(target)
        self.stub = rpc.BudgetServiceStub(self.channel)
        self.number, self.reserve, self.deadline = number, reserve, deadline
        self.spent = self.allowed = self.denied = 0
        self.ledger_key = ""  # from a Reserve's answer: the key Redis knows it by
        self.finished = False  # denied DENIED_IN_A_ROW times in a row (not the deadline)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # re-raised by the bench after join
            self.error = error
        finally:
            self.channel.close()

    def _loop(self) -> None:
        labels, in_a_row, n = {"tenant": "t"}, 0, 0
        ask = self._reserve_commit if self.reserve else self._check_consume
        while time.monotonic() < self.deadline:
            n += 1
            tokens = 1 + (n * 37 + self.number * 11) % 200  # 1..200, varied, reproducible
            if ask(labels, tokens, f"c{self.number}-{n}"):
                self.spent += tokens
                self.allowed += 1
                in_a_row = 0
                continue
            self.denied += 1
            in_a_row += 1
            if in_a_row >= DENIED_IN_A_ROW:
                self.finished = True
                return
            time.sleep(DENIED_PAUSE_S)

    def _reserve_commit(self, labels: dict[str, str], tokens: int, rid: str) -> bool:
        usage = pb.Usage(input_tokens=tokens)
        request = pb.ReserveRequest(request_id=rid, labels=labels, estimate=usage)
        held = self.stub.Reserve(request, timeout=CALL_TIMEOUT_S)
        if held.ledgers:
            self.ledger_key = held.ledgers[0].key
        if held.decision == pb.DECISION_DENY:
            return False
        commit = pb.CommitRequest(
            request_id=rid + "k", reservation_id=held.reservation_id, actual=usage
        )
        self.stub.Commit(commit, timeout=CALL_TIMEOUT_S)  # records actual = estimate
        return True

    def _check_consume(self, labels: dict[str, str], tokens: int, rid: str) -> bool:
        usage = pb.Usage(input_tokens=tokens)
        check = pb.CheckRequest(labels=labels, estimate=usage)
        if self.stub.Check(check, timeout=CALL_TIMEOUT_S).decision == pb.DECISION_DENY:
            return False
        # Consume always records: what others spent between the Check and here (on this
        # sidecar or another) can take the total past the cap; the bound is for that.
        request = pb.ConsumeRequest(request_id=rid, labels=labels, usage=usage)
        self.stub.Consume(request, timeout=CALL_TIMEOUT_S)
        return True


def read_window(url: str, prefix: str, ledger_key: str) -> tuple[int, int, int]:
    """Redis's settled total of the lifetime window (index 0), what is still leased,
    and the sidecars still holding a lease."""

    async def read() -> tuple[int, int, int]:
        async with connect(url, prefix=prefix) as store:
            share = await store.read(GlobalKey(ledger_key, 0, None), "bench-reader", [TOKENS])
        return share.used[0], share.leased[0], share.sidecars

    return asyncio.run(read())


def _run_clients(cars: list[Sidecar], seconds: float) -> tuple[list[Client], float]:
    """Every sidecar's clients at once until each is done (or the deadline)."""
    deadline = time.monotonic() + seconds
    half = CLIENTS_PER_SIDECAR // 2
    clients = [
        Client(car.target, CLIENTS_PER_SIDECAR * i + k, k < half, deadline)
        for i, car in enumerate(cars)
        for k in range(CLIENTS_PER_SIDECAR)
    ]
    began = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=seconds + 2 * CALL_TIMEOUT_S)
    for client in clients:
        if client.error is not None:
            raise RuntimeError(f"{client.name} failed") from client.error
    return clients, time.monotonic() - began


def overshoot(
    processes: Processes, home: Path, url: str, max_slice: float, options: argparse.Namespace
) -> dict[str, Any]:
    """One slice size on three fresh sidecars, with its own key prefix: each size starts
    from an empty window in Redis (the others' totals stay there, untouched)."""
    prefix = f"over-{max_slice}:"
    config = _global_table(url, max_slice, prefix) + _policy("org", "global", options.cap, None)
    home = home / f"slice-{max_slice}"
    cars = [ready(c) for c in [spawn(processes, home, f"car{i}", config) for i in range(SIDECARS)]]
    try:
        clients, seconds = _run_clients(cars, options.deadline)
    finally:
        calls = sum(drain(processes, car) for car in cars)  # SIGTERM: settle, give back
    keys = {c.ledger_key for c in clients if c.ledger_key}
    if len(keys) != 1:
        raise RuntimeError(f"expected one ledger key from the Reserve answers, got {keys}")
    (key,) = keys
    settled, leased, holders = read_window(url, prefix, key)
    total = sum(c.spent for c in clients)
    return {
        "max_slice": max_slice,
        "cap": options.cap,
        "ledger_key": key,
        "acknowledged": total,
        "redis_total": settled,
        "exact": settled == total,
        "leased_after_stop": leased,
        "sidecars_after_stop": holders,
        "overshoot": max(0, total - options.cap),
        "bound": SIDECARS * round(max_slice * options.cap),
        "redis_calls": calls,
        "decisions": sum(c.allowed + c.denied for c in clients),
        "denials": sum(c.denied for c in clients),
        "clients_done": sum(c.finished for c in clients),
        "clients": len(clients),
        "seconds": seconds,
    }


# --- the report ---------------------------------------------------------------------------


def speed_table(rows: list[dict[str, Any]], cells: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| operation | policy | decisions/s (min-max) | vs local | p50 ms | p99 ms "
        "| daemon CPU µs/decision | Redis calls / 1,000 decisions |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        ratio = f"{r['vs_local']:.2f}" if r["scope"] == "global" else "—"
        lines.append(
            f"| {r['operation']} | {r['scope']} | {r['decisions_per_s']:,.0f} "
            f"({r['decisions_per_s_min']:,.0f}-{r['decisions_per_s_max']:,.0f}) | {ratio} "
            f"| {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} "
            f"| {r['server_cpu_us_per_decision']:,.0f} | {r['redis_calls_per_1000']:.2f} |"
        )
    others = [c["others_busy"] for c in cells]
    errors = sum(c["errors"] for c in cells)
    lines += [
        "",
        f"Other processes took {min(others):.2f}-{max(others):.2f} CPUs during the windows "
        f"(median {statistics.median(others):.2f}); {errors} errors. Redis calls of a local "
        "row are the idle global lease's renewals, made meanwhile.",
    ]
    return lines


def overshoot_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| max_slice | cap | acknowledged | Redis settled | exact | overshoot | bound "
        "| leased after stop | Redis calls | decisions | clients done | seconds |",
        "|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['max_slice']} | {r['cap']:,} | {r['acknowledged']:,} | {r['redis_total']:,} "
            f"| {'yes' if r['exact'] else 'NO'} | {r['overshoot']:,} | {r['bound']:,} "
            f"| {r['leased_after_stop']:,} | {r['redis_calls']:,} | {r['decisions']:,} "
            f"| {r['clients_done']}/{r['clients']} | {r['seconds']:.1f} |"
        )
    return lines


def report(data: dict[str, Any]) -> str:
    machine = data["machine"]
    lines = [
        f"# Global policies (Redis) vs local — {data['kind']} run, {data['when']}",
        "",
        f"{machine['core']} core, Python {machine['python']}, {machine['cpus']} CPUs, "
        f"redis-server {machine['redis']} on loopback; journal durability (the default); "
        f"c={data['concurrency']} over the Unix socket; each cell {data['repetitions']} "
        f"time(s), {data['warmup']} s of warm-up then a {data['duration']} s window; "
        "medians, min-max in brackets, `vs local` the median of each repetition's ratio.",
        "",
        *speed_table(data["speed"], data["cells"]),
        "",
        f"Overshoot: {SIDECARS} sidecars, one global hard cap on total tokens, 4 clients "
        f"each (2 Reserve+Commit, 2 Check+Consume, 1-200 tokens a call) until denied "
        f"{DENIED_IN_A_ROW} times in a row; bound = {SIDECARS} x max_slice x cap; Redis "
        "calls of the three sidecars, their drains included.",
        "",
        *overshoot_table(data["overshoot"]),
    ]
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 20 s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/global.md"))
    parser.add_argument("--concurrency", type=int, default=16, help="callers per speed cell")
    parser.add_argument("--repetitions", type=int, help="of every speed cell (3; quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds a cell (4; quick 0.5)")
    parser.add_argument("--warmup", type=float, help="seconds before a window (1; quick 0.3)")
    parser.add_argument("--cap", type=int, help=f"the overshoot cap ({CAP:,}; quick 20,000)")
    parser.add_argument("--slices", help="max_slice values, comma-separated (quick: 0.05)")
    parser.add_argument("--deadline", type=float, help="seconds a slice size at most (90)")
    options = parser.parse_args(argv)
    quick = options.quick
    defaults = {
        "repetitions": 1 if quick else 3,
        "duration": 0.5 if quick else 4.0,
        "warmup": 0.3 if quick else 1.0,
        "cap": 20_000 if quick else CAP,
        "deadline": 20.0 if quick else 90.0,
    }
    for name, value in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    text = options.slices or ("0.05" if quick else ",".join(map(str, SLICES)))
    options.slice_sizes = [float(s) for s in text.split(",")]
    return options


def measure(options: argparse.Namespace) -> dict[str, Any]:
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="budgetd-global-bench-") as temp:
        home = Path(temp)
        (home / "redis").mkdir()
        redis = RedisServer(home / "redis")
        try:
            url = f"redis://127.0.0.1:{redis.port}"
            cells, core = speed(processes, home, url, options)
            over = [overshoot(processes, home, url, s, options) for s in options.slice_sizes]
            version = redis.version()
        finally:
            processes.stop_all()
            redis.stop()
    return {
        "kind": "quick" if options.quick else "full",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "core": core,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "redis": version,
        },
        "concurrency": options.concurrency,
        "repetitions": options.repetitions,
        "warmup": options.warmup,
        "duration": options.duration,
        "speed": summarize(cells),
        "cells": cells,
        "overshoot": over,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["load"]:  # one speed cell's load process (run_cell starts it)
        return load_main(args[1:])
    options = parse(args)
    data = measure(options)
    text = report(data)
    print(text, end="")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(text, encoding="utf-8")
    options.out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
