"""Server set-ups compared (issue 13): grpc.aio on uvloop, as budgetd runs, against
grpc.aio on plain asyncio, the sync `grpc.server` on a thread pool, a few server options,
the load generator's channel count, and the real daemon with `--loop uvloop` against
`--loop asyncio`.

Every floor set-up is bench.floor's servicer (its handlers, or for the thread-pool
server the same methods answered from a sync function: each request parsed by its real
message class, each reply the bytes budgetd gave), on a Unix socket, each in a process
of its own. The replies are recorded from the real daemon first (bench.recording). Each
cell is one run of the load generator (bench.loadgen, its own process, closed loop at
c=64 over the socket, warm-up then a measured window; server CPU from /proc); cells are
repeated (--repetitions, 3) in an order rotated each repetition, and every ratio is
taken to its reference set-up within one repetition, then the median of those ratios.

Run: BUDGETD_CORE=compiled PYTHONPATH=build/native .venv/bin/python -m bench.setups
     --out bench/results/setups.md      (about 3 minutes on a 2-core VM; --quick: ~1)
A server alone: python -m bench.setups serve --replies FILE --socket PATH
     [--server aio|sync] [--loop uvloop|asyncio] [--workers N] [--option NAME=VALUE]...
     [--no-rpc-limit]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import uvloop

from bench import extras, floor, recording
from bench.processes import Budgetd, LogReader, Processes
from budgetd.server import ConnectionLimits, server_options
from budgetd.tuning import settle_heap

Option = tuple[str, int | str]
CONCURRENCY = 64
BASELINE = "aio-uvloop"
DAEMON_BASELINE = "budgetd-uvloop"
BOTH = ("consume", "check")
CONSUME = ("consume",)


@dataclass(frozen=True)
class SetUp:
    """One server set-up: what serves (the floor, or budgetd itself), how, and with
    which options; `reference` is the set-up its ratios are taken to."""

    name: str
    title: str
    system: str = "floor"  # floor | budgetd
    server: str = "aio"  # aio | sync (floor only)
    loop: str = "uvloop"  # uvloop | asyncio (aio and budgetd)
    workers: int = 0  # the sync server's thread pool
    options: tuple[Option, ...] = ()  # over budgetd.server.server_options
    rpc_limit: bool = True  # budgetd's maximum_concurrent_rpcs, or none
    channels: int = 0  # the load generator's --channels (0: its default, 1 per 16)
    operations: tuple[str, ...] = CONSUME
    reference: str = BASELINE

    def server_key(self) -> tuple[Any, ...]:
        """Set-ups that differ only on the client side share one server process."""
        return (self.system, self.server, self.loop, self.workers, self.options, self.rpc_limit)


SETUPS: tuple[SetUp, ...] = (
    SetUp(BASELINE, "grpc.aio + uvloop, budgetd's options (baseline)", operations=BOTH),
    SetUp("aio-asyncio", "grpc.aio + asyncio", loop="asyncio", operations=BOTH),
    SetUp(
        "sync-4", "grpc.server + ThreadPoolExecutor(4)", server="sync", workers=4, operations=BOTH
    ),
    SetUp(
        "sync-16",
        "grpc.server + ThreadPoolExecutor(16)",
        server="sync",
        workers=16,
        operations=BOTH,
    ),
    SetUp("no-rpc-limit", "aio + uvloop, maximum_concurrent_rpcs=None", rpc_limit=False),
    SetUp(
        "bdp-probe-0",
        "aio + uvloop, grpc.http2.bdp_probe=0",
        options=(("grpc.http2.bdp_probe", 0),),
    ),
    SetUp("reuseport-1", "aio + uvloop, grpc.so_reuseport=1", options=(("grpc.so_reuseport", 1),)),
    SetUp(
        "streams-100",
        "aio + uvloop, grpc.max_concurrent_streams=100",
        options=(("grpc.max_concurrent_streams", 100),),
    ),
    SetUp(
        "read-chunk-64k",
        "aio + uvloop, grpc.experimental.tcp_read_chunk_size=65536",
        options=(("grpc.experimental.tcp_read_chunk_size", 65_536),),
    ),
    SetUp(
        "write-buffer-1m",
        "aio + uvloop, grpc.http2.write_buffer_size=1 MiB",
        options=(("grpc.http2.write_buffer_size", 1 << 20),),
    ),
    SetUp("channels-1", "aio + uvloop; client: 1 shared channel", channels=1),
    SetUp("channels-64", "aio + uvloop; client: 1 channel per caller", channels=CONCURRENCY),
    SetUp(
        DAEMON_BASELINE, "budgetd --loop uvloop (the default)", system="budgetd", operations=BOTH
    ),
    SetUp(
        "budgetd-asyncio",
        "budgetd --loop asyncio",
        system="budgetd",
        loop="asyncio",
        operations=BOTH,
        reference=DAEMON_BASELINE,
    ),
)
BY_NAME = {s.name: s for s in SETUPS}


# --- the servers -----------------------------------------------------------------------------


def options_for(overrides: Sequence[Option]) -> list[tuple[str, Any]]:
    """budgetd's server options (bench.floor's), with `overrides` replacing or adding."""
    chosen = dict(server_options(floor.MAX_MESSAGE_BYTES, ConnectionLimits()))
    chosen.update(overrides)
    return list(chosen.items())


def max_rpcs(rpc_limit: bool) -> int | None:
    """budgetd's bound on concurrent calls (as bench.floor has it), or none."""
    return floor.budgetd_max_rpcs() if rpc_limit else None


def _sync_unary(reply: bytes) -> Callable[[Any, Any], bytes]:
    def answer(request: Any, context: Any) -> bytes:
        return reply

    return answer


def _sync_stream(reply: bytes) -> Callable[[Iterator[Any], Any], Iterator[bytes]]:
    def answer(requests: Iterator[Any], context: Any) -> Iterator[bytes]:
        for _request in requests:
            yield reply

    return answer


def sync_server(
    replies: dict[str, bytes],
    socket: Path,
    workers: int,
    options: Sequence[Option] = (),
    rpc_limit: bool = True,
) -> grpc.Server:
    """The floor on the sync `grpc.server` with a pool of `workers` threads, started."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers),
        options=options_for(options),
        maximum_concurrent_rpcs=max_rpcs(rpc_limit),
    )
    # bench.floor's handlers, answered from plain functions (the thread-pool server
    # cannot await).
    server.add_generic_rpc_handlers((floor.handlers(replies, _sync_unary, _sync_stream),))
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    return server


def serve_sync(
    replies: dict[str, bytes],
    socket: Path,
    workers: int,
    options: Sequence[Option],
    rpc_limit: bool,
) -> None:
    server = sync_server(replies, socket, workers, options, rpc_limit)
    settle_heap()
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda _n, _f: stop.set())
    _ready("threads")
    while not stop.wait(0.5):
        pass
    server.stop(None).wait()


def _ready(loop: str) -> None:
    print(json.dumps({"ready": True, "pid": os.getpid(), "loop": loop}), flush=True)


def _option(text: str) -> Option:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text}: NAME=VALUE")
    return (name, int(value) if value.lstrip("-").isdigit() else value)


def serve_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.setups serve")
    p.add_argument("--replies", type=Path, required=True, help="JSON: method -> base64")
    p.add_argument("--socket", type=Path, required=True, help="Unix socket path")
    p.add_argument("--server", choices=("aio", "sync"), default="aio")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--workers", type=int, default=4, help="the sync server's threads")
    p.add_argument("--option", type=_option, action="append", default=[], help="NAME=VALUE")
    p.add_argument("--no-rpc-limit", action="store_true", help="maximum_concurrent_rpcs=None")
    args = p.parse_args(argv)
    replies = floor.load_replies(args.replies)
    limit = not args.no_rpc_limit
    if args.server == "sync":
        serve_sync(replies, args.socket, args.workers, args.option, limit)
    elif args.loop == "uvloop":
        uvloop.run(
            floor.serve(replies, args.socket, None, options_for(args.option), max_rpcs(limit))
        )
    else:
        asyncio.run(
            floor.serve(replies, args.socket, None, options_for(args.option), max_rpcs(limit))
        )
    return 0


@dataclass
class Server:
    pid: int
    target: str
    loop: str


def start_floor(processes: Processes, home: Path, setup: SetUp, replies: Path) -> Server:
    socket = home / f"{setup.name}.sock"
    argv = [sys.executable, "-m", "bench.setups", "serve", "--replies", str(replies)]
    argv += ["--socket", str(socket), "--server", setup.server, "--loop", setup.loop]
    argv += ["--workers", str(setup.workers or 4)]
    for name, value in setup.options:
        argv += ["--option", f"{name}={value}"]
    if not setup.rpc_limit:
        argv.append("--no-rpc-limit")
    process = processes.start(argv, stdout=subprocess.PIPE, stderr=None)
    ready = LogReader(process.stdout, "ready").wait(process, f"the {setup.name} floor")
    loop = str(ready["loop"])
    if loop != (setup.loop if setup.server == "aio" else "threads"):
        raise RuntimeError(f"{setup.name}: the floor runs on {loop}")
    return Server(int(ready["pid"]), f"unix:{socket}", loop)


def start_daemon(processes: Processes, home: Path, setup: SetUp) -> tuple[Server, Budgetd]:
    daemon = Budgetd(processes, home, setup.name, extra=("--loop", setup.loop))
    ready = daemon.log.first("ready") or {}
    return Server(daemon.pid, daemon.target("uds"), str(ready.get("loop", "?"))), daemon


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Settings:
    repetitions: int = 3
    duration: float = 2.0
    warmup: float = 0.5
    setups: tuple[str, ...] = tuple(s.name for s in SETUPS)
    operations: tuple[str, ...] = BOTH
    threads: int = 1_000
    quick: bool = False
    out: Path = Path("bench/results/setups.md")


@dataclass(frozen=True)
class Cell:
    setup: str
    operation: str


def plan(settings: Settings) -> list[Cell]:
    return [
        Cell(name, operation)
        for name in settings.setups
        for operation in BY_NAME[name].operations
        if operation in settings.operations
    ]


def order(cells: list[Cell], repetition: int, repetitions: int) -> list[Cell]:
    """One repetition's cells, rotated by a share of their number each repetition."""
    shift = repetition * len(cells) // max(repetitions, 1)
    return cells[shift:] + cells[:shift]


def loadgen_args(cell: Cell, server: Server, settings: Settings) -> list[str]:
    setup = BY_NAME[cell.setup]
    return [
        "--target", server.target, "--operation", cell.operation,
        "--concurrency", str(CONCURRENCY), "--transport", "uds",
        "--duration", str(settings.duration), "--warmup", str(settings.warmup),
        "--server-pid", str(server.pid), "--threads", str(settings.threads),
        "--channels", str(setup.channels),
    ]  # fmt: skip


def _needed(settings: Settings) -> list[SetUp]:
    """The set-ups whose servers must run: those chosen and their references."""
    names = set(settings.setups)
    names |= {BY_NAME[n].reference for n in settings.setups}
    return [s for s in SETUPS if s.name in names]


def start_servers(
    processes: Processes, home: Path, settings: Settings
) -> tuple[dict[str, Server], str]:
    """Every server the set-ups need (one process per distinct server), the daemons
    first: the floors answer with the bytes the uvloop daemon gave (started for that
    even when no daemon set-up is measured). Returns set-up name -> server, and the
    daemons' core."""
    wanted = _needed(settings)
    daemons = [s for s in wanted if s.system == "budgetd"] or [BY_NAME[DAEMON_BASELINE]]
    servers: dict[str, Server] = {}
    recorded_from = ""
    core = "?"
    for setup in daemons:
        server, daemon = start_daemon(processes, home, setup)
        if server.loop != setup.loop:
            raise RuntimeError(f"{setup.name}: the daemon runs on {server.loop}")
        recording.touch_ledgers(server.target, settings.threads)
        servers[setup.name] = server
        core = daemon.core
        if not recorded_from or setup.loop == "uvloop":
            recorded_from = server.target
    replies, missing = recording.record_replies(recorded_from, 64, ("consume",))
    if missing:
        raise RuntimeError(f"budgetd did not answer: {missing}")
    path = home / "replies.json"
    recording.write_replies(replies, path)
    started: dict[tuple[Any, ...], Server] = {}
    for setup in wanted:
        if setup.system == "floor":
            key = setup.server_key()
            if key not in started:
                started[key] = start_floor(processes, home, setup, path)
            servers[setup.name] = started[key]
    return servers, core


def run(settings: Settings) -> dict[str, Any]:
    began = time.monotonic()
    processes = Processes()
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        stack.callback(processes.stop_all)
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="budgetd-setups-")))
        servers, core = start_servers(processes, home, settings)
        cells = plan(settings)
        references = {Cell(BY_NAME[c.setup].reference, c.operation) for c in cells}
        cells += [c for c in sorted(references, key=str) if c not in cells]
        for repetition in range(settings.repetitions):
            for position, cell in enumerate(order(cells, repetition, settings.repetitions)):
                server = servers[cell.setup]
                result = extras.loadgen(
                    processes,
                    loadgen_args(cell, server, settings),
                    settings.warmup + settings.duration,
                )
                results.append(
                    asdict(cell)
                    | {"repetition": repetition, "position": position, "loop": server.loop}
                    | result
                )
                _progress(cell, repetition, result)
    return {"meta": _meta(settings, core, time.monotonic() - began), "cells": results}


def _progress(cell: Cell, repetition: int, result: dict[str, Any]) -> None:
    errors = f", {result['errors']} errors ({result['error_sample']})" if result["errors"] else ""
    print(
        f"[{repetition + 1}] {cell.setup:<16} {cell.operation:<8}: "
        f"{result['ops_per_s']:>8,.0f} ops/s p50 {result['p50_us']:>6,.0f} µs, "
        f"server {result['server_cpu_us_per_op']:>5,.1f} µs/call{errors}",
        file=sys.stderr,
        flush=True,
    )


def _meta(settings: Settings, core: str, took: float) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "uvloop": importlib.metadata.version("uvloop"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "core": core,
        "seconds": took,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
        },
    }


# --- the report ------------------------------------------------------------------------------

FIGURES = ("ops_per_s", "p50_us", "p99_us", "server_cpu_us_per_op")


@dataclass
class Row:
    setup: str
    title: str
    operation: str
    reference: str
    repetitions: int
    figures: dict[str, tuple[float, float, float]]  # median, min, max
    ratios: dict[str, tuple[float, float, float]]  # to the reference, per repetition
    own_busy: float
    others_busy: float
    errors: int


def _spread(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), min(values), max(values)) if values else (0.0, 0.0, 0.0)


def rows(cells: list[dict[str, Any]]) -> list[Row]:
    """One row per (set-up, operation) measured, in SETUPS order: medians and spread of
    each figure, and of its ratio to the reference set-up in the same repetition."""
    by: dict[tuple[str, str, int], dict[str, Any]] = {
        (c["setup"], c["operation"], c["repetition"]): c for c in cells
    }
    table: list[Row] = []
    for setup in SETUPS:
        for operation in BOTH:
            mine = [c for c in cells if c["setup"] == setup.name and c["operation"] == operation]
            if not mine:
                continue
            ratios: dict[str, list[float]] = {f: [] for f in FIGURES}
            for cell in mine:
                base = by.get((setup.reference, operation, cell["repetition"]))
                if base is None or setup.name == setup.reference:
                    continue
                for f in FIGURES:
                    if base[f]:
                        ratios[f].append(cell[f] / base[f])
            table.append(
                Row(
                    setup=setup.name,
                    title=setup.title,
                    operation=operation,
                    reference=setup.reference if setup.name != setup.reference else "",
                    repetitions=len(mine),
                    figures={f: _spread([c[f] for c in mine]) for f in FIGURES},
                    ratios={f: _spread(v) for f, v in ratios.items() if v},
                    own_busy=statistics.median(c["own_busy"] for c in mine),
                    others_busy=statistics.median(c["others_busy"] for c in mine),
                    errors=sum(int(c["errors"]) for c in mine),
                )
            )
    return table


def _figure(spread: tuple[float, float, float], digits: int = 0, repetitions: int = 2) -> str:
    median, low, high = spread
    text = f"{median:,.{digits}f}"
    return text if repetitions < 2 else f"{text} ({low:,.{digits}f}-{high:,.{digits}f})"


def _ratio(row: Row, figure: str) -> str:
    spread = row.ratios.get(figure)
    if spread is None:
        return "—"
    return _figure(spread, 2, row.repetitions)


def table_lines(table: list[Row]) -> list[str]:
    lines = [
        "| set-up | op | ops/s | p50 µs | p99 µs | server CPU µs/call | vs | ops/s x | "
        "p50 x | p99 x | CPU/call x | load gen CPUs | errors |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        n = row.repetitions
        f = row.figures
        lines.append(
            f"| `{row.setup}`: {row.title} | {row.operation} | {_figure(f['ops_per_s'], 0, n)} "
            f"| {_figure(f['p50_us'], 0, n)} | {_figure(f['p99_us'], 0, n)} "
            f"| {_figure(f['server_cpu_us_per_op'], 1, n)} | {row.reference or 'baseline'} "
            f"| {_ratio(row, 'ops_per_s')} | {_ratio(row, 'p50_us')} | {_ratio(row, 'p99_us')} "
            f"| {_ratio(row, 'server_cpu_us_per_op')} | {row.own_busy:.2f} | {row.errors} |"
        )
    return lines


READING = """\
Each cell: one load-generator process (bench.loadgen: grpc.aio on uvloop, {concurrency}
callers in a closed loop, one channel per 16 callers unless the set-up says otherwise),
over the Unix socket, {warmup:g} s of warm-up then {duration:g} s measured; {repetitions}
repetition(s), the order rotated each repetition. Floors answer with the reply bytes the
daemon gave; the daemons run the bench policies (four ledgers per call), memory
durability, {core} core. Figures: median over the repetitions (min-max). Ratios (x): the
set-up / its reference (`vs`) within one repetition, median of those (min-max); for
ops/s above 1 is faster, for latency and CPU/call below 1 is cheaper. Server CPU is
utime+stime of all the server's threads over the window. The server and the load
generator share {cpus} CPUs: throughput is bound by whichever is busier (load gen CPUs
near 1: it set the pace), so read CPU/call for what a set-up costs.
"""


def markdown(document: dict[str, Any]) -> str:
    meta = document["meta"]
    s = meta["settings"]
    table = rows(document["cells"])
    document["rows"] = [asdict(row) for row in table]
    head = (
        f"# Server set-ups\n\ngrpc {meta['grpc']}, uvloop {meta['uvloop']}, Python "
        f"{meta['python']}, {meta['machine']}, {meta['cpus']} CPUs; "
        f"{meta['seconds'] / 60:.1f} minutes in all.\n"
    )
    reading = READING.format(
        concurrency=CONCURRENCY,
        warmup=s["warmup"],
        duration=s["duration"],
        repetitions=s["repetitions"],
        core=meta["core"],
        cpus=meta["cpus"],
    )
    others = [row.others_busy for row in table]
    note = (
        f"\nOther processes on the machine took {min(others):.2f}-{max(others):.2f} CPUs "
        "during the windows (median per set-up).\n"
        if others
        else ""
    )
    return "\n".join([head, reading, *table_lines(table), note])


def write(document: dict[str, Any], out: Path) -> str:
    text = markdown(document)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(f"written to {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return text


# --- command line ----------------------------------------------------------------------------


def settings_of(argv: list[str]) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="one repetition of 1.5 s cells")
    p.add_argument("--repetitions", type=int, help="rounds of every cell (default 3)")
    p.add_argument("--duration", type=float, help="measured seconds per cell (default 2.0)")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per cell")
    p.add_argument("--setups", default=",".join(BY_NAME), help="set-ups to measure")
    p.add_argument("--operations", default=",".join(BOTH), help="consume,check")
    p.add_argument("--threads", type=int, default=1_000, help="thread labels the load spreads over")
    p.add_argument("--out", type=Path, default=Path("bench/results/setups.md"))
    args = p.parse_args(argv)
    chosen = tuple(n for n in args.setups.split(",") if n)
    unknown = set(chosen) - set(BY_NAME)
    if unknown:
        p.error(f"--setups: unknown {', '.join(sorted(unknown))}; known: {', '.join(BY_NAME)}")
    operations = tuple(args.operations.split(","))
    if not set(operations) <= set(BOTH):
        p.error(f"--operations: {', '.join(BOTH)}")
    return Settings(
        repetitions=args.repetitions or (1 if args.quick else 3),
        duration=args.duration or (1.5 if args.quick else 2.0),
        warmup=args.warmup,
        setups=chosen,
        operations=operations,
        threads=args.threads,
        quick=bool(args.quick),
        out=args.out,
    )


def _terminated(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops every child as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["serve"]:
        return serve_main(arguments[1:])
    settings = settings_of(arguments)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        document = run(settings)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(write(document, settings.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
