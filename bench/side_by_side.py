"""`make bench`: budgetd side by side with a floor and a Redis + Lua peer, in one report.

In one run it starts the real daemon (bench policies: four ledgers per call), records
the reply bytes it gives for each method the cells use, starts the floor (bench.floor:
budgetd's contract answered with those bytes, doing nothing) and, when redis-server is
installed, the Redis peer (bench.redis_peer). Each cell — operation x concurrency x
transport x system — is one run of the load generator (bench.loadgen), a process of its
own; all cells are repeated (--repetitions, default 3) in an order rotated each
repetition, the budgetd and floor cells of one operation side by side, and the report
gives medians with their spread and, for each ratio, the median of the repetitions'
own ratios. Then the extra figures: Consume with 10 Subscribe readers against none, a
daemon filled to 1,000,000 ledgers, and the existing benches (core, service, metrics,
durability) run as they run alone, their tables embedded. Writes
bench/results/side-by-side.md and .json (with --quick, *-quick.*: not committed).

Loopback only; every process started is stopped at the end, also on an error or Ctrl-C.
Run: `make bench` (about 25 minutes on a 2-core VM), `make bench-quick` (under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import extras, recording, redis_peer, report
from bench.core_bench import core_kind
from bench.loadgen import OPERATIONS, REDIS_OPERATIONS
from bench.processes import Budgetd, Floor, Processes
from bench.redis_peer import RedisServer
from budgetd.v1 import budget_pb2 as pb

SYSTEMS = ("budgetd", "floor", "peer")
TRANSPORTS = ("uds", "tcp")
QUICK_CELLS = ("consume:64:uds", "check:64:uds", "batch_stream:64:uds")


@dataclass(frozen=True)
class Cell:
    system: str
    operation: str
    concurrency: int
    transport: str


@dataclass
class Settings:
    repetitions: int = 3
    duration: float = 2.0
    warmup: float = 0.7
    cells: list[tuple[str, int, str]] = field(default_factory=list)
    systems: tuple[str, ...] = SYSTEMS
    batch_size: int = 64
    mix: tuple[str, ...] = ("consume",)
    threads: int = 1_000
    durability: str = "memory"
    subscribers: int = 10
    million_ledgers: int = 1_000_000
    embedded: tuple[str, ...] = extras.EMBEDDED
    durability_ledgers: int = 1_000_000
    quick: bool = False
    out_dir: Path = Path("bench/results")
    name: str = "side-by-side"


def plan(settings: Settings) -> list[list[Cell]]:
    """Groups of cells measured back to back: the budgetd and floor cells of one
    (operation, concurrency, transport), or a peer cell alone."""
    groups: list[list[Cell]] = []
    for operation, concurrency, transport in settings.cells:
        if operation in REDIS_OPERATIONS:
            # Kept when the peer cannot run: its rows then say why they were not measured.
            systems: tuple[str, ...] = ("peer",) if "peer" in settings.systems else ()
        else:
            systems = tuple(s for s in ("budgetd", "floor") if s in settings.systems)
        if systems:
            groups.append([Cell(s, operation, concurrency, transport) for s in systems])
    return groups


def order(groups: list[list[Cell]], repetition: int, repetitions: int) -> list[Cell]:
    """The cells of one repetition: the groups rotated by a share of their number, and
    the systems within a group swapped every other repetition, so that no cell always
    runs first or right after the same neighbour."""
    shift = repetition * len(groups) // max(repetitions, 1)
    rotated = groups[shift:] + groups[:shift]
    return [cell for group in rotated for cell in (group[::-1] if repetition % 2 else group)]


class Run:
    """The systems of one run and the cells measured on them."""

    def __init__(self, settings: Settings, processes: Processes, home: Path) -> None:
        self.settings = settings
        self.processes = processes
        self.home = home
        self.budgetd: Budgetd | None = None
        self.floor: Floor | None = None
        self.redis: RedisServer | None = None
        self.missing: dict[str, str] = {}  # method or system -> why it was not measured
        self.results: list[dict[str, Any]] = []
        self.info: pb.GetServerInfoResponse | None = None
        self.redis_version = ""

    def start(self, stack: ExitStack) -> None:
        s = self.settings
        self.budgetd = Budgetd(self.processes, self.home, "budgetd", s.durability)
        target = self.budgetd.target("uds")
        replies, missing = recording.record_replies(target, s.batch_size, s.mix)
        self.missing.update(missing)
        recording.touch_ledgers(target, s.threads)
        path = self.home / "replies.json"
        recording.write_replies(replies, path)
        if "floor" in s.systems:
            self.floor = Floor(self.processes, self.home, path)
        reason = redis_peer.missing_reason()
        wanted = "peer" in s.systems and any(op in REDIS_OPERATIONS for op, _, _ in s.cells)
        if wanted and reason is None:
            self.redis = RedisServer(self.home)
            stack.callback(self.redis.stop)
            self.redis_version = self.redis.version()
        elif wanted:
            self.missing["peer"] = reason or ""

    def server(self, system: str) -> Budgetd | Floor | RedisServer:
        found = {"budgetd": self.budgetd, "floor": self.floor, "peer": self.redis}[system]
        assert found is not None, system
        return found

    def skipped(self, cell: Cell) -> str | None:
        """Why a cell cannot be measured in this run (no peer, a method the daemon lacks)."""
        if cell.system == "peer":
            return self.missing.get("peer")
        method = {"batch": "Batch", "batch_stream": "BatchStream"}.get(cell.operation)
        if method and method in self.missing:
            return f"budgetd answered {method} with {self.missing[method]}"
        return None

    def measure(self, cell: Cell, repetition: int, position: int) -> None:
        why = self.skipped(cell)
        if why is not None:
            self.results.append({**asdict(cell), "repetition": repetition, "skipped": why})
            return
        server = self.server(cell.system)
        result = extras.loadgen(
            self.processes,
            self.settings_args(cell, server.target(cell.transport), server.pid),
            self.settings.warmup + self.settings.duration,
        )
        self.results.append(
            {**asdict(cell), "repetition": repetition, "position": position} | result
        )
        _progress(cell, repetition, result)

    def settings_args(self, cell: Cell, target: str, pid: int) -> list[str]:
        s = self.settings
        return [
            "--target", target, "--operation", cell.operation,
            "--concurrency", str(cell.concurrency), "--transport", cell.transport,
            "--duration", str(s.duration), "--warmup", str(s.warmup),
            "--server-pid", str(pid), "--batch-size", str(s.batch_size),
            "--mix", ",".join(s.mix), "--threads", str(s.threads),
        ]  # fmt: skip


def _progress(cell: Cell, repetition: int, result: dict[str, Any]) -> None:
    errors = f", {result['errors']} errors ({result['error_sample']})" if result["errors"] else ""
    print(
        f"[{repetition + 1}] {cell.system:<7} {cell.operation:<15} c={cell.concurrency:<3} "
        f"{cell.transport}: {result['ops_per_s']:>8,.0f} ops/s "
        f"p50 {result['p50_us']:>7,.0f} µs, server {result['server_cpu_us_per_op']:>6,.0f} "
        f"µs/op{errors}",
        file=sys.stderr,
        flush=True,
    )


def run(settings: Settings) -> dict[str, Any]:
    """Every system, cell and extra figure of one run; the report's data."""
    began = time.monotonic()
    capacity = cpu_capacity()
    processes = Processes()
    with ExitStack() as stack:
        stack.callback(processes.stop_all)
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="budgetd-sbs-")))
        measured = Run(settings, processes, home)
        measured.start(stack)
        groups = plan(settings)
        for repetition in range(settings.repetitions):
            for position, cell in enumerate(order(groups, repetition, settings.repetitions)):
                measured.measure(cell, repetition, position)
        figures = _extra_figures(settings, measured, processes, home)
        embedded = extras.embedded(
            processes,
            settings.embedded,
            settings.out_dir,
            settings.quick,
            settings.durability_ledgers,
        )
    return {
        "meta": _meta(settings, measured, capacity, time.monotonic() - began),
        "cells": measured.results,
        "missing": measured.missing,
        "extras": figures,
        "embedded": embedded,
    }


def _extra_figures(
    settings: Settings, measured: Run, processes: Processes, home: Path
) -> dict[str, Any]:
    """Subscribe readers on the cells' daemon; then, with the cells' systems stopped (a
    million ledgers need the memory), a fresh daemon filled to a million ledgers."""
    daemon = measured.budgetd
    assert daemon is not None
    timing = (settings.duration, settings.warmup)
    figures: dict[str, Any] = {}
    if settings.subscribers:
        figures["subscribers"] = extras.subscribers(
            processes, daemon, settings.subscribers, settings.repetitions, timing
        )
    measured.info = recording.server_info(daemon.target("uds"))
    for system in (measured.floor, measured.redis, daemon):
        if system is not None:
            system.stop()
    if settings.million_ledgers:
        figures["million"] = extras.million(
            processes, home / "million", settings.million_ledgers, timing, settings.threads
        )
    return figures


def _meta(settings: Settings, measured: Run, capacity: float, took: float) -> dict[str, Any]:
    info = measured.info
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_capacity": capacity,
        "core": measured.budgetd.core if measured.budgetd else "?",
        "bench_core": core_kind(),
        "budgetd_version": info.version if info else "",
        "durability": settings.durability,
        "redis": measured.redis_version,
        "seconds": took,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
        },
    }


def cpu_capacity() -> float:
    """How many CPUs' worth two spinning processes get (bench.metrics_bench's gauge: a VM
    may report 2 CPUs and give the pair less)."""
    from bench.metrics_bench import cpu_capacity as gauge  # noqa: PLC0415 - its OTLP imports

    return gauge()


# --- the report ----------------------------------------------------------------------------

READING = """\
**Systems.** *budgetd*: the daemon on the bench policies (four ledgers per call: per-thread,
per-agent, daily, per-model), {durability} durability, anonymous loopback TCP allowed to
spend with no rate limit (the Unix socket is its owner's: no per-call auth). *floor*:
budgetd's contract served by grpc.aio on uvloop with budgetd's server options, each
request parsed by its real message class and answered with the bytes budgetd gave for
that method in this run — what gRPC in Python costs with no budget work. *peer*:
redis-server {redis} on loopback (no persistence) running a Lua check-and-consume of four
counters per call, driven by redis.asyncio + hiredis, one connection per caller.

**Cells.** Each cell is a separate load-generator process (grpc.aio on uvloop, closed
loop of c callers, one channel per 16 callers): {warmup:g} s of warm-up, then {duration:g} s
measured; {repetitions} repetition(s), the order rotated each repetition. Streams are
lock-step (one message in flight per caller). Batches carry {batch_size} operations
({mix}), the peer's pipeline 64 EVALSHA: for those an op is a message and decisions/s counts
the operations. reserve_commit: an op is the pair. Latency is per op (per message).

**Reading it.** Figures are medians over repetitions (min-max in brackets). Every ratio
is budgetd / the other system within one repetition, then the median of those ratios:
for CPU/op, p50 and p99.9 above 1 is what budgetd adds over the floor; for ops/s below 1
is what it loses. ÷ peer compares decisions/s with the peer's per-call rate (redis) or
pipelined rate (redis_pipelined). Server CPU is utime+stime of all the server's threads
over the measured window; RSS is the server's at the window's end. The daemon and the
load generator share {cpus} CPUs (two spinning processes got {capacity:.1f} CPUs' worth
at the start): throughput is bounded by whichever of the two is busier, so read CPU/op
for what the server itself costs.
"""


def markdown(document: dict[str, Any]) -> str:
    meta = document["meta"]
    s = meta["settings"]
    table = report.rows(document["cells"])
    targets, left_out = report.cell_targets(table, TRANSPORTS)
    targets += report.extra_targets(document["extras"])
    document["rows"] = [asdict(row) for row in table]
    document["targets"] = [asdict(t) | {"met": t.met} for t in targets]
    head = (
        f"# budgetd side by side\n\nbudgetd {meta['budgetd_version']}, {meta['core']} core, "
        f"Python {meta['python']}, {meta['machine']}, {meta['cpus']} CPUs; "
        f"{meta['seconds'] / 60:.1f} minutes in all.\n"
    )
    reading = READING.format(
        durability=meta["durability"],
        redis=meta["redis"] or "(not run)",
        warmup=s["warmup"],
        duration=s["duration"],
        repetitions=s["repetitions"],
        batch_size=s["batch_size"],
        mix=", ".join(s["mix"]),
        cpus=meta["cpus"],
        capacity=meta["cpu_capacity"],
    )
    parts = [head, reading, "## Cells\n", *report.table_lines(table), ""]
    parts += ["## Targets (issue 13)\n", *report.target_lines(targets, left_out), ""]
    parts += _extras_lines(document["extras"]) + _missing_lines(document["missing"])
    for bench in document["embedded"]:
        parts += [
            f"## {bench['name']} bench ({bench['file']}, {bench['seconds']:.0f} s)\n",
            "```text",
            bench["text"].rstrip(),
            "```",
            "",
        ]
    return "\n".join(parts)


def _extras_lines(figures: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    readers = figures.get("subscribers")
    if readers:
        lines += ["## Consume with Subscribe readers (budgetd, c=64, uds)\n"]
        for number, pair in enumerate(readers["runs"], start=1):
            delivered = pair["delivered"]
            ended = f", streams ended: {delivered['ended']}" if delivered.get("ended") else ""
            lines.append(
                f"- repetition {number}: none {pair['none']['ops_per_s']:,.0f} ops/s, "
                f"{readers['readers']} readers {pair['readers']['ops_per_s']:,.0f} ops/s "
                f"(ratio {pair['ratio']:.2f}; events read per reader: "
                f"{delivered.get('events', [])}{ended})"
            )
        low, high = readers["ratio_spread"]
        lines += [f"- median ratio {readers['ratio']:.2f} ({low:.2f}-{high:.2f})", ""]
    big = figures.get("million")
    if big:
        lines += [
            "## A million ledgers (budgetd, fresh daemon, memory durability)\n",
            f"- filled from {big['ledgers_before']:,} to {big['ledgers']:,} ledgers with "
            f"{big['fill_consumes']:,} Batch Consumes in {big['fill_seconds']:.0f} s "
            f"({big['fill_consumes'] / max(big['fill_seconds'], 1e-9):,.0f}/s), after "
            f"{big['request_memory_fill']:,} Consumes that filled the request-id memory "
            f"({big['remembered_requests']:,} ids, {big['remembered_request_bytes'] / 2**20:,.0f} "
            "MiB accounted) so that it holds as much before as after",
            f"- RSS {big['rss_before'] / 2**20:,.0f} MiB before, {big['rss_after'] / 2**20:,.0f} "
            f"MiB after: {big['rss_per_ledger']:,.0f} B per ledger added",
            f"- Consume p50 at c=1 over uds: {big['p50_small_us']:.0f} µs at "
            f"{big['ledgers_before']:,} ledgers, {big['p50_large_us']:.0f} µs at "
            f"{big['ledgers']:,} (the load spread over all of them): {big['p50_ratio']:.2f}x",
            f"- GetServerInfo after: gc_collections = {big['gc_collections']}, "
            f"longest_gc_pause = {big['longest_gc_pause_ms']:.3f} ms",
            "",
        ]
    return lines


def _missing_lines(missing: dict[str, str]) -> list[str]:
    if not missing:
        return []
    lines = ["## Not measured\n"]
    for what, why in missing.items():
        lines.append(f"- {what}: {why}")
    return [*lines, ""]


def write(document: dict[str, Any], settings: Settings) -> str:
    text = markdown(document)
    suffix = "-quick" if settings.quick else ""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    base = settings.out_dir / f"{settings.name}{suffix}"
    base.with_suffix(".md").write_text(text, encoding="utf-8")
    base.with_suffix(".json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(f"written to {base}.md and {base}.json", file=sys.stderr)
    return text


# --- command line --------------------------------------------------------------------------


def _cells(text: str) -> list[tuple[str, int, str]]:
    cells = []
    for item in text.split(","):
        operation, concurrency, transport = item.split(":")
        if operation not in OPERATIONS or transport not in TRANSPORTS:
            raise argparse.ArgumentTypeError(
                f"{item}: OPERATION:CONCURRENCY:{'|'.join(TRANSPORTS)}"
            )
        cells.append((operation, int(concurrency), transport))
    return cells


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--quick", action="store_true", help="a few cells, one repetition, core quick run"
    )
    p.add_argument("--repetitions", type=int, help="rounds of every cell (default 3)")
    p.add_argument("--duration", type=float, help="measured seconds per cell (default 2.0)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 0.7)")
    p.add_argument("--cells", type=_cells, help="OP:C:TRANSPORT,... (default: every combination)")
    p.add_argument("--operations", default=",".join(OPERATIONS), help="for the default cells")
    p.add_argument("--concurrency", default="1,64", help="for the default cells")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="for the default cells")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="budgetd,floor,peer")
    p.add_argument("--batch-size", type=int, default=64, help="operations per batch message")
    p.add_argument("--mix", default="consume", help="a batch's kinds, cycled: check,consume")
    p.add_argument("--threads", type=int, default=1_000, help="thread labels the load spreads over")
    p.add_argument("--durability", default="memory", choices=("memory", "snapshot", "journal"))
    p.add_argument("--subscribers", type=int, help="Subscribe readers (default 10; 0: skip)")
    p.add_argument("--million-ledgers", type=int, help="ledgers to fill to (default 1M; 0: skip)")
    p.add_argument(
        "--embedded", help=f"existing benches to run: {','.join(extras.EMBEDDED)} or none"
    )
    p.add_argument(
        "--durability-ledgers", type=int, default=1_000_000, help="bench.durability_bench's"
    )
    p.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    p.add_argument("--name", default="side-by-side", help="file name of the report")
    return p


def settings_of(argv: list[str]) -> Settings:
    args = parser().parse_args(argv)
    quick = bool(args.quick)
    default_cells = [
        (op, int(c), t)
        for op in args.operations.split(",")
        for c in args.concurrency.split(",")
        for t in args.transports.split(",")
    ]
    embedded = (
        args.embedded
        if args.embedded is not None
        else ("core" if quick else ",".join(extras.EMBEDDED))
    )
    return Settings(
        repetitions=args.repetitions or (1 if quick else 3),
        duration=args.duration or (1.5 if quick else 2.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 0.7),
        cells=args.cells or (_cells(",".join(QUICK_CELLS)) if quick else default_cells),
        systems=tuple(args.systems.split(",")),
        batch_size=args.batch_size,
        mix=tuple(args.mix.split(",")),
        threads=args.threads,
        durability=args.durability,
        subscribers=args.subscribers if args.subscribers is not None else (0 if quick else 10),
        million_ledgers=args.million_ledgers
        if args.million_ledgers is not None
        else (0 if quick else 1_000_000),
        embedded=tuple(n for n in embedded.split(",") if n and n != "none"),
        durability_ledgers=args.durability_ledgers,
        quick=quick,
        out_dir=args.out_dir,
        name=args.name,
    )


def _terminated(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops every child as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    settings = settings_of(sys.argv[1:] if argv is None else argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        document = run(settings)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(write(document, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
