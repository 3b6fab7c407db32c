"""Server set-ups compared: which gRPC server budgetd runs on, and with what options.

budgetd runs grpc.aio on uvloop (`budgetd.server.build_server`). This bench measures
that choice against the alternatives, each with the same closed-loop load from a
separate process (`bench/loadgen.py`, c=64 over the Unix socket):

- the floor (`bench/floor.py`: budgetd's contract answering budgetd's own reply bytes,
  nothing behind it) served by grpc.aio on uvloop — the baseline — and by grpc.aio on
  plain asyncio, by the blocking `grpc.server` on a thread pool of 4 and of 16, and by
  grpc.aio on uvloop with extra server options (`grpc.optimization_target` =
  "throughput"; an HTTP/2 write buffer of 1 MiB);
- the real daemon on uvloop (its default) and on asyncio (`--loop asyncio`).

Every set-up runs the same cells (Consume and Check), repeated and interleaved in an
order rotated each repetition; ratios to the baseline are taken within a repetition.
Figures: ops/s, p50 / p99, and server CPU µs per call from /proc (the steadiest one on
a shared machine). Markdown to --out, JSON beside it.

Run: BUDGETD_CORE=compiled PYTHONPATH=build/native python -m bench.setups \
         --out bench/results/setups.md   (about 5 minutes; --quick: one repetition)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench import recording
from bench.extras import loadgen
from bench.floor import SERVICE, UNARY, handlers, load_replies
from bench.processes import Budgetd, LogReader, Processes
from budgetd.server import MAX_UNARY_IN_FLIGHT, ConnectionLimits, server_options
from budgetd.tuning import settle_heap

MAX_MESSAGE_BYTES = 65_536  # budgetd's default server.max_message_bytes
BASELINE = "floor: aio + uvloop"
OPERATIONS = ("consume", "check")
CONCURRENCY = 64
EXTRA_OPTIONS: dict[str, list[tuple[str, Any]]] = {
    "throughput": [("grpc.optimization_target", "throughput")],
    "write-buffer": [("grpc.http2.write_buffer_size", 1 << 20)],
}


@dataclass(frozen=True)
class Setup:
    name: str
    kind: str  # "floor" or "budgetd"
    argv: tuple[str, ...] = ()  # the floor worker's flags, or the daemon's extra flags


SETUPS = (
    Setup(BASELINE, "floor", ("--server", "aio", "--loop", "uvloop")),
    Setup("floor: aio + asyncio", "floor", ("--server", "aio", "--loop", "asyncio")),
    Setup("floor: sync, 4 threads", "floor", ("--server", "sync", "--threads", "4")),
    Setup("floor: sync, 16 threads", "floor", ("--server", "sync", "--threads", "16")),
    Setup(
        "floor: aio + uvloop, optimization_target=throughput",
        "floor",
        ("--server", "aio", "--loop", "uvloop", "--options", "throughput"),
    ),
    Setup(
        "floor: aio + uvloop, 1 MiB write buffer",
        "floor",
        ("--server", "aio", "--loop", "uvloop", "--options", "write-buffer"),
    ),
    Setup("budgetd: uvloop (default)", "budgetd", ("--loop", "uvloop")),
    Setup("budgetd: asyncio", "budgetd", ("--loop", "asyncio")),
)


# --- the floor's servers --------------------------------------------------------------


def _sync_handlers(replies: dict[str, bytes]) -> grpc.GenericRpcHandler[Any, Any]:
    """The floor's unary methods for the blocking server (its streams are not measured)."""

    def answer(reply: bytes) -> Callable[[Any, Any], bytes]:
        return lambda request, context: reply

    table = {
        method: grpc.unary_unary_rpc_method_handler(
            answer(reply), request_deserializer=UNARY[method], response_serializer=bytes
        )
        for method, reply in replies.items()
        if method in UNARY
    }
    return grpc.method_handlers_generic_handler(SERVICE, table)


def _options(names: list[str]) -> list[tuple[str, Any]]:
    options = server_options(MAX_MESSAGE_BYTES, ConnectionLimits())
    for name in names:
        options += EXTRA_OPTIONS[name]
    return options


def _ready(pid: int) -> None:
    print(json.dumps({"ready": True, "pid": pid}), flush=True)


async def _serve_aio(replies: dict[str, bytes], socket: str, names: list[str]) -> None:
    limits = ConnectionLimits()
    server = grpc.aio.server(
        maximum_concurrent_rpcs=limits.max_streams_total + MAX_UNARY_IN_FLIGHT,
        options=_options(names),
    )
    server.add_generic_rpc_handlers((handlers(replies),))
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    _ready(os.getpid())
    await stop.wait()
    await server.stop(None)


def _serve_sync(replies: dict[str, bytes], socket: str, threads: int, names: list[str]) -> None:
    limits = ConnectionLimits()
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads),
        maximum_concurrent_rpcs=limits.max_streams_total + MAX_UNARY_IN_FLIGHT,
        options=_options(names),
    )
    server.add_generic_rpc_handlers((_sync_handlers(replies),))
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    settle_heap()
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    _ready(os.getpid())
    stop.wait()
    server.stop(None)


def serve(args: argparse.Namespace) -> None:
    replies = load_replies(args.replies)
    names = [n for n in args.options.split(",") if n]
    if args.server == "sync":
        _serve_sync(replies, args.socket, args.threads, names)
    elif args.loop == "uvloop":
        uvloop.run(_serve_aio(replies, args.socket, names))
    else:
        asyncio.run(_serve_aio(replies, args.socket, names))


# --- the runs --------------------------------------------------------------------------


@dataclass
class Started:
    pid: int
    target: str


@dataclass
class Results:
    cells: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def started(setup: Setup, processes: Processes, home: Path, replies: Path) -> Iterator[Started]:
    if setup.kind == "budgetd":
        daemon = Budgetd(
            processes, home / setup.name.replace(" ", "_"), "budgetd", extra=setup.argv
        )
        try:
            yield Started(daemon.pid, daemon.target("uds"))
        finally:
            daemon.stop()
        return
    socket = home / f"floor-{SETUPS.index(setup)}.sock"
    argv = [sys.executable, "-m", "bench.setups", "--serve", "--replies", str(replies)]
    argv += ["--socket", str(socket), *setup.argv]
    process = processes.start(argv, stdout=subprocess.PIPE, stderr=None)
    ready = LogReader(process.stdout, "ready").wait(process, setup.name)
    try:
        yield Started(int(ready["pid"]), f"unix:{socket}")
    finally:
        processes.stop(process)


def measure(
    setup: Setup, target: str, pid: int, operation: str, timing: tuple[float, float]
) -> dict[str, Any]:
    duration, warmup = timing
    argv = [
        "--target", target, "--operation", operation, "--concurrency", str(CONCURRENCY),
        "--duration", str(duration), "--warmup", str(warmup), "--server-pid", str(pid),
    ]  # fmt: skip
    return loadgen(PROCESSES, argv, duration + warmup)


PROCESSES = Processes()


def run(repetitions: int, timing: tuple[float, float], home: Path) -> Results:
    replies_path = home / "replies.json"
    with started(SETUPS[-2], PROCESSES, home, replies_path) as daemon:
        replies, missing = recording.record_replies(daemon.target, 64, ("consume",))
    if missing:
        raise SystemExit(f"budgetd did not answer: {missing}")
    recording.write_replies(replies, replies_path)
    results = Results()
    for repetition in range(repetitions):
        order = SETUPS[repetition % len(SETUPS) :] + SETUPS[: repetition % len(SETUPS)]
        for setup in order:
            with started(setup, PROCESSES, home, replies_path) as server:
                for operation in OPERATIONS:
                    result = measure(setup, server.target, server.pid, operation, timing)
                    cell = {"setup": setup.name, "operation": operation}
                    results.cells.append(cell | {"repetition": repetition, "result": result})
                    print(
                        f"[{repetition + 1}] {setup.name:<52} {operation:<8} "
                        f"{result['ops_per_s']:>8,.0f} ops/s, server "
                        f"{result['server_cpu_us_per_op']:>6,.0f} µs/op",
                        flush=True,
                    )
    return results


# --- the report ------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(cells: list[dict[str, Any]]) -> list[str]:
    """One row per set-up and operation: medians over the repetitions, and the median
    of the per-repetition ratio of server CPU per call to the baseline's."""
    by: dict[tuple[str, str, int], dict[str, Any]] = {
        (c["setup"], c["operation"], c["repetition"]): c["result"] for c in cells
    }
    lines = [
        "| set-up | op | ops/s | p50 µs | p99 µs | server CPU µs/call (min-max) "
        "| CPU vs baseline |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    names = list(dict.fromkeys(c["setup"] for c in cells))
    for name in names:
        for operation in OPERATIONS:
            runs = [(k[2], r) for k, r in by.items() if k[0] == name and k[1] == operation]
            if not runs:
                continue
            cpu = [r["server_cpu_us_per_op"] for _, r in runs]
            ratios = [
                r["server_cpu_us_per_op"] / base["server_cpu_us_per_op"]
                for rep, r in runs
                if (base := by.get((BASELINE, operation, rep))) is not None
            ]
            lines.append(
                f"| {name} | {operation} | {_median([r['ops_per_s'] for _, r in runs]):,.0f} "
                f"| {_median([r['p50_us'] for _, r in runs]):,.0f} "
                f"| {_median([r['p99_us'] for _, r in runs]):,.0f} "
                f"| {_median(cpu):,.0f} ({min(cpu):,.0f}-{max(cpu):,.0f}) "
                f"| {_median(ratios):.2f}x |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="Markdown table (JSON beside it)")
    parser.add_argument("--quick", action="store_true", help="one repetition, short cells")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replies", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--server", choices=("aio", "sync"), default="aio", help=argparse.SUPPRESS)
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help=argparse.SUPPRESS
    )
    parser.add_argument("--threads", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    if args.out is None:
        parser.error("--out is required")
    repetitions, timing = (1, (1.5, 0.5)) if args.quick else (args.repetitions, (2.0, 0.7))
    try:
        with tempfile.TemporaryDirectory(prefix="budgetd-setups-") as home:
            results = run(repetitions, timing, Path(home))
    finally:
        PROCESSES.stop_all()
    lines = [
        f"Server set-ups, c={CONCURRENCY} over the Unix socket, {repetitions} repetition(s) of "
        f"{timing[0]} s after {timing[1]} s of warm-up; medians; baseline: {BASELINE}",
        "",
        *table(results.cells),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results.cells, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
