"""Machine instructions per hot-path call, counted by valgrind: a figure that does not move
with the load of a shared machine, for comparing a change to the hot path before and after.

Each operation runs in a worker process under valgrind (cachegrind) twice, once with
only the set-up and warm-up and once with `--calls` more calls; the difference divided by
the calls is the cost of one call. The engine is the one `make bench` measures at 1,000
ledgers, with an idempotency memory small enough to be full (and evicting) after the
warm-up, and the cyclic garbage collector off: its cost lands on a few calls, not on the
median one.

Run: `make bench-instructions` (needs valgrind).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.core_bench import POLICIES, START, core_kind, write_table
from budgetd import wire
from budgetd.core import Engine, Limits, Policy, Usage
from budgetd.event_log import EventLog
from budgetd.runtime import Runtime
from budgetd.service import BudgetService
from budgetd.telemetry.recorder import Recorder
from budgetd.telemetry.settings import TelemetrySettings
from budgetd.v1 import budget_pb2 as pb

MEMORY = 1_000  # remembered request ids: full after the default warm-up
# The third: a consume with what the metrics add to it (the recorder fed its result, as
# the runtime does when an exporter is on); the difference to the first is their cost.
# The last two: what the service adds in Python, without gRPC: a parsed ConsumeRequest
# submitted through `BudgetService` and its answer encoded (a Consume's, or one message
# of a ConsumeStream's, own work), and one operation of a 64-Consume batch submitted
# and answered (`Batches`; its count is per operation).
OPERATIONS = (
    "consume (4 ledgers)",
    "reserve+commit",
    "consume + metrics",
    "consume, service",
    "batch op, service",
)
BATCH_SIZE = 64
SERVICE_POOL = 8_192  # requests the service rows may use (warm-up and counted)
_COUNTED = re.compile(r"I\s+refs:\s*([\d,]+)")


def _operation(name: str, ledgers: int) -> Callable[[int], object]:
    limits = Limits(max_ledgers=10_000, idempotency_max_entries=MEMORY)
    engine = Engine([Policy.from_mapping(p) for p in POLICIES], limits=limits)
    usage = Usage(120, 80, model="gpt-4o", latency_us=350_000)
    estimate = Usage(200, 200, model="gpt-4o")
    labels = [{"agent": f"a{i % 8}", "thread": f"t{i}"} for i in range(max(1, ledgers - 10))]
    now = START + 1.0
    ids = itertools.count()

    def consume(i: int) -> object:
        return engine.consume(labels[i % len(labels)], usage, f"c-{next(ids)}", now)

    def reserve_commit(i: int) -> object:
        n = next(ids)
        held, _ = engine.reserve(labels[i % len(labels)], estimate, 60.0, f"r-{n}", now)
        return engine.commit(held.reservation_id, usage, f"k-{n}", now)

    recorder = Recorder(TelemetrySettings())

    def consume_metered(i: int) -> object:
        subject, request_id = labels[i % len(labels)], f"c-{next(ids)}"
        result, events = engine.consume(subject, usage, request_id, now)
        args = {"labels": subject, "usage": usage, "request_id": request_id, "run_id": ""}
        recorder.applied("consume", args, result, events)
        return result

    for i in range(len(labels)):  # every ledger exists before the warm-up
        consume(i)
    if name in OPERATIONS[3:]:
        return _service_operation(name, engine, labels)
    return {OPERATIONS[0]: consume, OPERATIONS[1]: reserve_commit}.get(name, consume_metered)


def _service_operation(
    name: str, engine: Engine, labels: list[dict[str, str]]
) -> Callable[[int], object]:
    service = BudgetService(Runtime(engine, EventLog(10_000, 8, 1_000), clock=lambda: START + 1))
    usage = pb.Usage(input_tokens=120, output_tokens=80, model="gpt-4o", latency_us=350_000)
    # Built before counting, the same in both runs compared: a fixed pool, one request
    # id each (a second use would be a replay, answered from memory).
    pool = [
        pb.ConsumeRequest(request_id=f"s-{i}", labels=labels[i % len(labels)], usage=usage)
        for i in range(SERVICE_POOL)
    ]

    def pooled(i: int) -> int:
        if i >= SERVICE_POOL:
            raise SystemExit(f"{name}: at most {SERVICE_POOL:,} warm-up + counted calls")
        return i

    if name == OPERATIONS[3]:
        return lambda i: wire.consume(service._submit_consume(pool[pooled(i)])[0])

    batches = service.batches
    grouped = [
        pb.BatchRequest(operations=[pb.BatchOperation(consume=r) for r in pool[b : b + BATCH_SIZE]])
        for b in range(0, SERVICE_POOL, BATCH_SIZE)
    ]

    def batch_op(i: int) -> object:
        if pooled(i) % BATCH_SIZE:
            return None  # counted: the batch that holds this operation did its work
        answering = batches.answer(batches.submit(grouped[i // BATCH_SIZE]))
        try:  # nothing to wait for in memory durability: it finishes at the first step
            answering.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("a memory-mode batch answer waited")

    return batch_op


def _worker(name: str, ledgers: int, warm_up: int, calls: int) -> None:
    operation = _operation(name, ledgers)
    gc.disable()
    for i in range(warm_up + calls):
        operation(i)


def _worker_env() -> dict[str, str]:
    # Compiled modules are cached (outside the tree) so that the two runs compared import
    # alike, and a worker does not spend most of its time under valgrind compiling.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "budgetd-bench-pycache")
    # One string hash for both runs compared: dicts then grow and probe alike, and the
    # difference between the runs is the calls' alone.
    env["PYTHONHASHSEED"] = "0"
    return env


def _instructions(valgrind: str, name: str, args: argparse.Namespace, calls: int) -> int:
    command = [
        valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--worker",
        name,
        "--ledgers",
        str(args.ledgers),
        "--warm-up",
        str(args.warm_up),
        "--calls",
        str(calls),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=_worker_env())
    found = _COUNTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed for {name!r}:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    # Multiples of BATCH_SIZE: a batch operation's row counts whole batches, so a count
    # that ends inside a batch would charge its remaining operations to the counted ones.
    parser.add_argument("--calls", type=int, default=3_072, help="calls counted per operation")
    parser.add_argument("--ledgers", type=int, default=1_000, help="ledgers in the engine")
    parser.add_argument("--warm-up", type=int, default=2_048, help="calls before counting")
    parser.add_argument("--out", type=Path, help="file to write the table to")
    parser.add_argument("--worker", choices=OPERATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.ledgers, args.warm_up, args.calls)
        return 0
    if args.out is None:
        parser.error("--out is required")
    for flag, count in (("--calls", args.calls), ("--warm-up", args.warm_up)):
        if count % BATCH_SIZE:
            parser.error(f"{flag} must be a multiple of {BATCH_SIZE} (the batch size), not {count}")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    lines = [
        f"budgetd {core_kind()} core, instructions per call — Python {platform.python_version()}, "
        f"{platform.machine()}; {args.ledgers:,} ledgers, {args.calls:,} calls counted",
        "",
        f"{'operation':<22} {'instructions':>12}",
        f"{'-' * 22} {'-' * 12}",
    ]
    print("\n".join(lines), flush=True)
    prime = [sys.executable, "-m", "bench.instructions", "--worker", OPERATIONS[0]]
    prime += ["--ledgers", "1", "--warm-up", "0", "--calls", "0"]
    subprocess.run(prime, check=True, env=_worker_env())  # fills the module cache
    for name in OPERATIONS:
        base = _instructions(valgrind, name, args, 0)
        total = _instructions(valgrind, name, args, args.calls)
        line = f"{name:<22} {(total - base) / args.calls:>12,.0f}"
        print(line, flush=True)
        lines.append(line)
    write_table(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
