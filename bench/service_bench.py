"""End-to-end latency of the daemon: a real `budgetd` process, called over its Unix socket.

Measures what an agent sees, gRPC included, with the blocking Python stubs on one
connection: unary Consume (four ledgers plus the embedded meters), Reserve followed by
Commit, and Consume over one ConsumeStream (requests pipelined, answers read in order).
The daemon runs on whatever core this process would import (`make bench` puts the
compiled one first on PYTHONPATH). Prints a table and writes it to the file given with
--out; loopback only, bounded in calls.

Run: `make bench` (after the core table).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from bench.core_bench import core_kind, write_table
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

USAGE = pb.Usage(input_tokens=120, output_tokens=80, model="gpt-4o", latency_us=350_000)
THREADS = 1_000


def _labels(i: int) -> dict[str, str]:
    return {"agent": f"a{i % 8}", "thread": f"t{i % THREADS}"}


def _start(home: Path) -> tuple[subprocess.Popen[str], str, threading.Thread]:
    socket = home / "budgetd.sock"
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "budgetd",
            "--socket",
            str(socket),
            "--no-tcp",
            "--state-dir",
            str(home / "state"),
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "BUDGETD_CONFIG"},
    )
    stderr = daemon.stderr
    assert stderr is not None
    for line in stderr:
        if '"ready"' in line:
            # Keep reading so the daemon never blocks on a full pipe.
            reader = threading.Thread(target=stderr.read, daemon=True)
            reader.start()
            return daemon, f"unix:{socket}", reader
    raise SystemExit(f"budgetd did not start (exit {daemon.wait()})")


def _timed(calls: int, operation: Callable[[int], object]) -> tuple[float, float, float]:
    samples = []
    clock = time.perf_counter_ns
    began = clock()
    for i in range(calls):
        t0 = clock()
        operation(i)
        samples.append(clock() - t0)
    elapsed = clock() - began
    samples.sort()
    return calls / (elapsed / 1e9), samples[calls // 2] / 1000, samples[calls * 99 // 100] / 1000


def _stream_rate(budget: rpc.BudgetServiceStub, calls: int) -> float:
    def requests() -> Iterator[pb.ConsumeStreamRequest]:
        for i in range(calls):
            request = pb.ConsumeRequest(request_id=f"s{i}", labels=_labels(i), usage=USAGE)
            yield pb.ConsumeStreamRequest(sequence=i + 1, request=request)

    began = time.perf_counter()
    answered = sum(1 for a in budget.ConsumeStream(requests()) if a.HasField("response"))
    elapsed = time.perf_counter() - began
    assert answered == calls, f"{calls - answered} stream messages failed"
    return calls / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="file to write the table to")
    parser.add_argument("--calls", type=int, default=5_000, help="calls per row")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="budgetd-bench-") as home:
        daemon, target, reader = _start(Path(home))
        try:
            lines = _measure(target, args.calls)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            reader.join(timeout=30)  # EOF once the daemon is gone
            if daemon.stderr is not None:
                daemon.stderr.close()
    print("\n".join(lines))
    write_table(lines, args.out)
    return 0


def _measure(target: str, calls: int) -> list[str]:
    channel = grpc.insecure_channel(target)
    budget = rpc.BudgetServiceStub(channel)
    for i in range(THREADS):  # every ledger exists before timing
        budget.Consume(pb.ConsumeRequest(request_id=f"w{i}", labels=_labels(i), usage=USAGE))

    def consume(i: int) -> object:
        return budget.Consume(pb.ConsumeRequest(request_id=f"c{i}", labels=_labels(i), usage=USAGE))

    def reserve_commit(i: int) -> object:
        held = budget.Reserve(
            pb.ReserveRequest(request_id=f"r{i}", labels=_labels(i), estimate=USAGE)
        )
        return budget.Commit(
            pb.CommitRequest(request_id=f"k{i}", reservation_id=held.reservation_id, actual=USAGE)
        )

    lines = [
        f"budgetd over its Unix socket — {core_kind()} core, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{calls} calls per row, one blocking client",
        "",
        f"{'operation':<26} {'ops/s':>10} {'p50 µs':>8} {'p99 µs':>8}",
        f"{'-' * 26} {'-' * 10} {'-' * 8} {'-' * 8}",
    ]
    for name, operation in (
        ("Consume (unary)", consume),
        ("Reserve+Commit (unary)", reserve_commit),
    ):
        rate, p50, p99 = _timed(calls, operation)
        lines.append(f"{name:<26} {rate:>10,.0f} {p50:>8.0f} {p99:>8.0f}")
    rate = _stream_rate(budget, calls)
    lines.append(f"{'Consume (ConsumeStream)':<26} {rate:>10,.0f} {'-':>8} {'-':>8}")
    channel.close()
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
