"""Micro-benchmark of the ledger core's hot path at several ledger populations.

Measures, in-process and without gRPC, the median and p99 latency of:
- Consume touching four ledgers (per-thread, per-agent, daily, a per-model meter);
- Reserve followed by Commit on the same four ledgers;
at 1k, 100k and 1M existing ledgers, and the resident memory per ledger at the largest
population. Prints a table and writes it to the file given with --out.

Run: `make bench` (or `make bench-quick` for 1k/100k and fewer iterations).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from budgetd.core import COMPILED, Engine, Limits, Policy, Usage
from budgetd.tuning import settle_heap


class Sample(NamedTuple):
    ops_per_s: float
    p50_us: float
    p99_us: float


POLICIES = (
    {"name": "per-thread", "per": ["thread"], "caps": {"total_tokens": 10**11}},
    {"name": "per-agent", "per": ["agent"], "caps": {"total_tokens": 10**12}},
    {
        "name": "daily",
        "caps": {"total_tokens": 10**12},
        "window": {"kind": "calendar", "unit": "day", "time_zone": "UTC"},
    },
    {"name": "model-usage", "per": ["model"]},
)
LABEL_POOL = 10_000
START = 1_800_000_000.0  # a fixed instant: the core takes time as an argument


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _engine(ledgers: int) -> Engine:
    policies = [Policy.from_mapping(p) for p in POLICIES]
    engine = Engine(policies, limits=Limits(max_ledgers=max(ledgers * 2, 10_000)))
    usage = Usage(10, 10, model="gpt-4o")
    # Each new thread adds one ledger (agents, the daily ledger and the model are shared).
    for i in range(ledgers - 10):
        engine.consume({"agent": f"a{i % 8}", "thread": f"t{i}"}, usage, f"seed-{i}", START)
    settle_heap()  # as the daemon does once its state is restored
    return engine


def _timed(count: int, operation: Callable[[int], object], rounds: int) -> Sample:
    """Run `operation(i)` `count` times in all, split into `rounds` rounds; keep the round
    with the lowest median (the machine's noise only ever adds time)."""
    best: Sample | None = None
    clock = time.perf_counter_ns
    per_round = count // rounds
    for r in range(rounds):
        samples = [0] * per_round
        began = clock()
        for j in range(per_round):
            i = r * per_round + j
            t0 = clock()
            operation(i)
            samples[j] = clock() - t0
        elapsed = clock() - began
        samples.sort()
        p50 = statistics.median(samples) / 1000
        p99 = samples[min(per_round - 1, int(per_round * 0.99))] / 1000
        sample = Sample(per_round / (elapsed / 1e9), p50, p99)
        if best is None or sample.p50_us < best.p50_us:
            best = sample
    assert best is not None
    return best


def _bench_population(ledgers: int, count: int, rounds: int) -> list[tuple[str, int, Sample]]:
    engine = _engine(ledgers)
    threads = max(1, ledgers - 10)
    step = max(1, threads // LABEL_POOL)
    labels = [{"agent": f"a{i % 8}", "thread": f"t{i}"} for i in range(0, threads, step)][
        :LABEL_POOL
    ]
    usage = Usage(120, 80, model="gpt-4o", latency_us=350_000)
    estimate = Usage(200, 200, model="gpt-4o")
    now = START + 1.0
    pool = len(labels)

    ids = itertools.count()  # every call a new request_id: no call may be a replay

    def consume(i: int) -> object:
        return engine.consume(labels[i % pool], usage, f"c-{next(ids)}", now)

    def reserve_commit(i: int) -> object:
        n = next(ids)
        held, _ = engine.reserve(labels[i % pool], estimate, 60.0, f"r-{n}", now)
        assert held.reservation_id, "the benchmark's reservations must be granted"
        return engine.commit(held.reservation_id, usage, f"k-{n}", now)

    rows = []
    for name, operation in (("consume (4 ledgers)", consume), ("reserve+commit", reserve_commit)):
        _timed(count // 2, operation, 1)  # warm up memo tables and the allocator
        rows.append((name, engine.ledger_count, _timed(count, operation, rounds)))
    return rows


def _memory_per_ledger(ledgers: int) -> float:
    gc.unfreeze()
    gc.collect()
    before = _rss_bytes()
    engine = _engine(ledgers)
    gc.collect()
    after = _rss_bytes()
    return (after - before) / engine.ledger_count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1k and 100k ledgers, fewer calls")
    parser.add_argument("--out", type=Path, required=True, help="file to write the table to")
    parser.add_argument("--populations", type=int, nargs="+", help="ledger counts to measure at")
    parser.add_argument("--calls", type=int, help="calls per row (split into 10 rounds)")
    args = parser.parse_args(argv)
    populations = args.populations or (
        (1_000, 100_000) if args.quick else (1_000, 100_000, 1_000_000)
    )
    count = args.calls or (20_000 if args.quick else 100_000)
    rounds = 10
    lines = [
        f"budgetd core micro-benchmark — {core_kind()} core, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; best of {rounds} rounds of "
        f"{count // rounds} calls per row",
        "",
        f"{'operation':<22} {'ledgers':>10} {'ops/s':>10} {'p50 µs':>8} {'p99 µs':>8}",
        f"{'-' * 22} {'-' * 10} {'-' * 10} {'-' * 8} {'-' * 8}",
    ]
    print("\n".join(lines), flush=True)
    for population in populations:
        for name, ledger_count, best in _bench_population(population, count, rounds):
            line = (
                f"{name:<22} {ledger_count:>10,} {best.ops_per_s:>10,.0f} "
                f"{best.p50_us:>8.2f} {best.p99_us:>8.2f}"
            )
            print(line, flush=True)
            lines.append(line)
    largest = populations[-1]
    per_ledger = _memory_per_ledger(largest)
    line = f"\nmemory: {per_ledger:,.0f} bytes per ledger (RSS growth at {largest:,} ledgers)"
    print(line)
    lines.append(line)
    write_table(lines, args.out)
    return 0


def core_kind() -> str:
    """Which core this process imported: `make bench` runs the compiled one."""
    return "compiled (mypyc)" if COMPILED else "pure-Python"


def write_table(lines: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
