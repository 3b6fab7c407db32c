"""What durability costs, measured on the real daemon in one run.

1. Consume throughput and latency per durability mode (journal, snapshot, memory) at
   concurrency 1 and 64, from a separate load-generator process (grpc.aio on uvloop,
   closed loop, warm-up then a measured window); for the journal, fsyncs per second
   and records per fsync (the daemon's own counters, printed when it stops).
2. Snapshot time and size at 100k and 1M ledgers (written in-process, as the forked
   child writes them), and how long `fork()` itself stalls the parent.
3. A daemon started on 1M ledgers plus 100k journal records: the recovery time, then
   the p99 of concurrent Consume calls (c=64) while a snapshot of the 1M ledgers is
   being written, against the same load without one.

Prints one table and writes it to --out. Loopback only; bounded in time (--seconds per
cell) and in size (--ledgers, default 1M). Run: `make bench-durability`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench.core_bench import core_kind, write_table
from budgetd.core import Engine, Usage, default_policies
from budgetd.core.mutations import Mutation
from budgetd.persistence import snapshot
from budgetd.persistence.journal import Entry, encode_entry
from budgetd.persistence.statedir import StateDir
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

USAGE = Usage(input_tokens=120, output_tokens=80, model="gpt-4o")
WIRE_USAGE = pb.Usage(input_tokens=120, output_tokens=80, model="gpt-4o")
T0 = 1_800_000_000.0
THREADS = 1_000  # ledgers the load spreads over in the throughput cells (--threads)


# --- the load generator (its own process) ------------------------------------------------


async def _drive(
    target: str, concurrency: int, seconds: float, stop_file: str, threads: int
) -> dict[str, Any]:
    """Closed loop: `concurrency` callers, each calling Consume as soon as answered."""
    latencies: list[int] = []
    counter = [0]
    measuring = [False]
    deadline = [0.0]
    async with grpc.aio.insecure_channel(target) as channel:
        budget = rpc.BudgetServiceStub(channel)

        async def caller(worker: int) -> None:
            clock = time.perf_counter_ns
            while True:
                counter[0] += 1
                i = counter[0]
                request = pb.ConsumeRequest(
                    request_id=f"d{os.getpid()}-{i}",
                    labels={"agent": f"a{i % 8}", "thread": f"t{i % threads}"},
                    usage=WIRE_USAGE,
                )
                began = clock()
                await budget.Consume(request)
                if measuring[0]:
                    latencies.append(clock() - began)
                if deadline[0] and time.monotonic() > deadline[0]:
                    return
                if stop_file and os.path.exists(stop_file):
                    return

        tasks = [asyncio.create_task(caller(w)) for w in range(concurrency)]
        await asyncio.sleep(0.5)  # warm-up
        measuring[0] = True
        print("measuring", flush=True)
        started = time.monotonic()
        if not stop_file:
            deadline[0] = started + seconds
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    latencies.sort()
    count = len(latencies)
    return {
        "ops": count / elapsed,
        "p50": latencies[count // 2] / 1000,
        "p99": latencies[count * 99 // 100] / 1000,
        "p999": latencies[min(count - 1, count * 999 // 1000)] / 1000,
        "calls": count,
    }


def drive_main(argv: list[str]) -> int:
    target, concurrency, seconds, stop_file, threads = argv
    result = uvloop.run(_drive(target, int(concurrency), float(seconds), stop_file, int(threads)))
    print(json.dumps(result), flush=True)
    return 0


class Driver:
    """The load generator as a separate process (it must not share our GIL)."""

    def __init__(
        self, target: str, concurrency: int, seconds: float, threads: int, stop_file: str = ""
    ) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.durability_bench",
                "--drive",
                target,
                str(concurrency),
                str(seconds),
                stop_file,
                str(threads),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    def measuring(self) -> None:
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "measuring"

    def result(self) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=600)
        return dict(json.loads(out.strip().splitlines()[-1]))


# --- the daemon --------------------------------------------------------------------------


class Daemon:
    def __init__(self, home: Path, mode: str, state: Path | None = None) -> None:
        self.socket = home / f"budgetd-{mode}.sock"
        self.began = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "budgetd",
                "--socket",
                str(self.socket),
                "--no-tcp",
                "--state-dir",
                str(state or home / f"state-{mode}"),
                "--durability",
                mode,
                "--snapshot-seconds",
                "86400",
                "--log-format",
                "json",
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
            | {"BUDGETD_CORE": os.environ.get("BUDGETD_CORE", "")},
        )
        self.lines: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        while not self.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() - self.began > 900:
                self._reader.join(timeout=5)
                raise SystemExit(f"budgetd ({mode}) did not start: {self.lines[-3:]}")
        self.ready_after = self.ready_at - self.began

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self.lines.append(record)
            if record.get("event") in ("ready", "cannot start"):
                self.ready_at = time.monotonic()
                self.ready.set()

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def event(self, name: str) -> dict[str, Any]:
        return next(r for r in self.lines if r.get("event") == name)

    def stop(self) -> dict[str, Any]:
        self.process.terminate()
        self.process.wait(timeout=900)
        self._reader.join(timeout=30)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.event("stopped")


def _warm(target: str, threads: int) -> None:
    channel = grpc.insecure_channel(target)
    budget = rpc.BudgetServiceStub(channel)
    for i in range(threads):  # every ledger exists before timing
        budget.Consume(
            pb.ConsumeRequest(
                request_id=f"w{i}",
                labels={"agent": f"a{i % 8}", "thread": f"t{i}"},
                usage=WIRE_USAGE,
            )
        )
    channel.close()


def throughput_rows(home: Path, seconds: float, threads: int) -> list[str]:
    rows = []
    by_mode: dict[tuple[str, int], float] = {}
    for mode in ("memory", "snapshot", "journal"):
        for concurrency in (1, 64):
            daemon = Daemon(home, mode)
            try:
                _warm(daemon.target, threads)
                driver = Driver(daemon.target, concurrency, seconds, threads)
                driver.measuring()
                began = time.monotonic()
                result = driver.result()
                elapsed = time.monotonic() - began
            finally:
                stopped = daemon.stop()
            by_mode[(mode, concurrency)] = result["ops"]
            fsyncs = stopped.get("journal_fsyncs", 0)
            records = stopped.get("journal_records", 0)
            extra = (
                f"{fsyncs / max(elapsed, 1e-9):>9,.0f} {records / max(fsyncs, 1):>9.1f}"
                if fsyncs
                else f"{'-':>9} {'-':>9}"
            )
            ratio = result["ops"] / by_mode[("memory", concurrency)]
            rows.append(
                f"{mode:<9} {concurrency:>4} {result['ops']:>9,.0f} {result['p50']:>8.0f} "
                f"{result['p99']:>8.0f} {result['p999']:>8.0f} {ratio:>7.2f}x {extra}"
            )
    return rows


# --- snapshots of many ledgers -------------------------------------------------------------


def build_engine(ledgers: int) -> Engine:
    engine = Engine(default_policies(), id_prefix="bench-")
    for i in range(ledgers):
        engine.consume({"agent": f"a{i % 8}", "thread": f"t{i}"}, USAGE, f"b{i}", T0 + i * 1e-6)
    return engine


def snapshot_rows(home: Path, sizes: list[int]) -> tuple[list[str], Path, Engine]:
    rows = []
    state = StateDir(home / "state-big")
    state.open()
    engine = Engine()
    for size in sizes:
        engine = build_engine(size)
        written = snapshot.write(state, engine, 0, 0, T0)
        began = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        fork_ms = (time.perf_counter() - began) * 1000
        os.waitpid(pid, 0)
        rows.append(
            f"{engine.ledger_count:>9,} ledgers: written in {written.seconds:6.2f} s, "
            f"{written.size_bytes / 2**20:7.1f} MiB, fork() stalls the parent {fork_ms:5.1f} ms"
        )
    state.close()
    return rows, state.path, engine


def add_journal(state_path: Path, engine: Engine, records: int) -> None:
    """`records` Consume records after the snapshot at lsn 0, as the daemon writes them."""
    with open(state_path / f"journal-{1:016d}.log", "wb") as out:
        for lsn in range(1, records + 1):
            i = lsn % engine.ledger_count
            mutation = Mutation(
                "consume",
                T0 + 10 + lsn * 1e-6,
                {
                    "labels": {"agent": f"a{i % 8}", "thread": f"t{i}"},
                    "usage": USAGE,
                    "request_id": f"j{lsn}",
                    "run_id": "",
                },
            )
            out.write(encode_entry(Entry(lsn, mutation, [])))
        out.flush()
        os.fsync(out.fileno())


def big_state_rows(home: Path, state_path: Path, engine: Engine, records: int) -> list[str]:
    add_journal(state_path, engine, records)
    daemon = Daemon(home, "journal", state_path)
    channel = grpc.insecure_channel(daemon.target)
    try:
        recovered = daemon.event("recovered")
        rows = [
            f"recovery of {engine.ledger_count:,} ledgers + {recovered['replayed']:,} journal "
            f"records: ready after {daemon.ready_after:.1f} s"
        ]
        threads = min(THREADS, engine.ledger_count)
        during, took = _load_while(daemon, home, threads, rpc.BudgetAdminServiceStub(channel))
        without, _ = _load_while(daemon, home, threads, None, took)
    finally:
        channel.close()
        daemon.stop()
    for phase, result in (("during a snapshot", during), ("without a snapshot", without)):
        rows.append(
            f"Consume c=64 {phase:<19}: p50 {result['p50']:6.0f} µs, p99 {result['p99']:7.0f} µs, "
            f"p99.9 {result['p999']:7.0f} µs, {result['ops']:,.0f} ops/s over {took:.1f} s"
        )
    rows.append(f"p99 during a snapshot / without: {during['p99'] / without['p99']:.2f}x")
    return rows


def _load_while(
    daemon: Daemon, home: Path, threads: int, admin: Any, window: float = 0.0
) -> tuple[dict[str, Any], float]:
    """Consume at c=64 while a snapshot is written (`admin` given), or for `window` s."""
    stop = home / "stop"
    stop.unlink(missing_ok=True)
    driver = Driver(daemon.target, 64, 0, threads, str(stop))
    driver.measuring()
    began = time.monotonic()
    if admin is not None:
        admin.Snapshot(pb.SnapshotRequest(), timeout=900)
    else:
        time.sleep(window)  # the same window as the snapshot's (measured first)
    took = time.monotonic() - began
    stop.touch()
    return driver.result(), took


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["--drive"]:
        return drive_main(arguments[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per cell")
    parser.add_argument("--ledgers", type=int, default=1_000_000, help="the big state's size")
    parser.add_argument("--journal-records", type=int, default=100_000, help="replayed at start")
    parser.add_argument("--threads", type=int, default=THREADS, help="ledgers the load uses")
    args = parser.parse_args(arguments)
    sizes = sorted({min(100_000, args.ledgers), args.ledgers})
    lines = [
        f"budgetd durability — {core_kind()} core, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; Consume over the Unix socket from a "
        f"separate grpc.aio process, {args.seconds:g} s per cell after 0.5 s of warm-up",
        "",
        f"{'mode':<9} {'c':>4} {'ops/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'p99.9µs':>8} "
        f"{'vs mem':>8} {'fsyncs/s':>9} {'rec/fsync':>9}",
    ]
    with tempfile.TemporaryDirectory(prefix="budgetd-bench-") as directory:
        home = Path(directory)
        lines += throughput_rows(home, args.seconds, args.threads)
        lines += ["", "snapshots (in-process, the forked child's work):"]
        rows, state_path, engine = snapshot_rows(home, sizes)
        lines += rows
        lines += ["", f"a daemon on the {engine.ledger_count:,}-ledger state:"]
        lines += big_state_rows(home, state_path, engine, args.journal_records)
    print("\n".join(lines))
    write_table(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
