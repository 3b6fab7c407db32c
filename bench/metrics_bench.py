"""What metrics cost Consume, measured on the real daemon in one run.

Four cells, each a fresh `budgetd` process on a Unix socket:
- `off`: no exporter (the default; the telemetry package is not even imported);
- `prometheus`: the scrape endpoint, scraped once a second (urllib, as Prometheus
  would) from a thread of this process while the load runs;
- `otlp up`: OTLP/gRPC every second to a receiver in this process that answers every
  Export with success;
- `otlp down`: OTLP/gRPC every second to a port nothing listens on (bound, never
  listening: every connection is refused).

The load is unary Consume from a separate grpc.aio process on uvloop (it must not share
this process's GIL): a closed loop of `--concurrency` callers, so that the daemon is the
bottleneck where the machine has a core for each (where it has not, the two share one:
the table shows how busy the daemon was, and its CPU per call). Each cell warms up
(every ledger the load uses exists before timing), then measures a fixed number of
calls; the load process also reads the daemon's CPU time (utime + stime of every thread,
/proc/PID/stat) at both ends of the window. The rounds interleave the cells in a
rotating order; the table gives medians over rounds, and the ratios (on / off, down /
up) as the median of each round's ratio. Prints one table and writes it to --out.
Loopback only; bounded in calls.

Run: `make bench` (after the service table), or `--quick` for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvloop
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from bench.core_bench import core_kind, write_table
from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc

USAGE = pb.Usage(input_tokens=120, output_tokens=80, model="gpt-4o", latency_us=350_000)
THREADS = 1_000  # thread ledgers the load spreads over (agents a0..a7 are attributes)
INTERVAL_MS = 1_000  # OTEL_METRIC_EXPORT_INTERVAL of the OTLP cells
SCRAPE_S = 1.0
CELLS = ("off", "prometheus", "otlp up", "otlp down")
NAMES = {
    "off": "off (no exporter)",
    "prometheus": "prometheus, scraped 1/s",
    "otlp up": "otlp/grpc, collector up",
    "otlp down": "otlp/grpc, collector down",
}
TICKS = os.sysconf("SC_CLK_TCK")


def _labels(i: int) -> dict[str, str]:
    return {"agent": f"a{i % 8}", "thread": f"t{i % THREADS}"}


def machine_busy_seconds() -> float:
    """CPU time every process on the machine used (all CPUs, /proc/stat), in seconds."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        after_name = stat.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5); after the name the list starts at field 3.
    return (int(after_name[11]) + int(after_name[12])) / TICKS


# --- the load generator (its own process) ------------------------------------------------


async def _drive(
    target: str, pid: int, concurrency: int, warmup: int, calls: int
) -> dict[str, Any]:
    """Closed loop: `concurrency` callers, each calling Consume as soon as answered, until
    `warmup + calls` have been answered; the window is the last `calls` answers."""
    total = warmup + calls
    issued = answered = failed = 0
    window: dict[str, float] = {}
    latencies: list[int] = []
    finished = asyncio.Event()
    clock = time.perf_counter_ns
    async with grpc.aio.insecure_channel(target) as channel:
        budget = rpc.BudgetServiceStub(channel)

        def mark(at: str) -> None:
            window[f"{at}_s"] = time.perf_counter()
            window[f"{at}_cpu"] = cpu_seconds(pid)
            window[f"{at}_own"] = time.process_time()
            window[f"{at}_all"] = machine_busy_seconds()

        async def caller() -> None:
            nonlocal issued, answered, failed
            while not finished.is_set():
                i = issued
                issued += 1
                request = pb.ConsumeRequest(request_id=f"m{i}", labels=_labels(i), usage=USAGE)
                began = clock()
                try:
                    await budget.Consume(request)
                except grpc.aio.AioRpcError:
                    failed += 1  # counted and shown: a bench asserts nothing
                took = clock() - began
                answered += 1
                if answered > warmup:
                    latencies.append(took)
                if answered == max(warmup, 1) and "start_s" not in window:
                    mark("start")
                    print("measuring", flush=True)
                if answered == total:
                    mark("end")
                    finished.set()

        if warmup == 0:
            mark("start")
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    latencies = sorted(latencies[:calls])
    elapsed = window["end_s"] - window["start_s"]
    cpu = window["end_cpu"] - window["start_cpu"]
    own = window["end_own"] - window["start_own"]
    machine = window["end_all"] - window["start_all"]
    return {
        "ops": calls / elapsed,
        "p50": latencies[len(latencies) // 2] / 1000,
        "p99": latencies[len(latencies) * 99 // 100] / 1000,
        "cpu_us": cpu / calls * 1e6,
        "busy": cpu / elapsed,
        "client_us": own / calls * 1e6,
        "others": max(0.0, machine - cpu - own) / elapsed,
        "seconds": elapsed,
        "failed": failed,
    }


def drive_main(argv: list[str]) -> int:
    target, pid, concurrency, warmup, calls = argv
    result = uvloop.run(_drive(target, int(pid), int(concurrency), int(warmup), int(calls)))
    print(json.dumps(result), flush=True)
    return 0


# --- what the daemon exports to -------------------------------------------------------------


class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    """An OTLP/gRPC collector on 127.0.0.1 that answers every Export with success."""

    def __init__(self) -> None:
        self.exports = 0
        self.points = 0
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="otlp")
        self._server = grpc.server(self._executor)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self, self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def Export(  # noqa: N802 - the service's method name
        self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> ExportMetricsServiceResponse:
        self.exports += 1
        return ExportMetricsServiceResponse()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
        self._executor.shutdown(wait=True)


class Scraper:
    """GET the Prometheus endpoint every second from a thread, as Prometheus would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scrapes = self.errors = 0
        self.samples = 0  # lines of the last scrape that are samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    body = answer.read().decode()
                self.scrapes += 1
                self.samples = sum(1 for line in body.splitlines() if line[:1] not in ("#", ""))
            except OSError:
                self.errors += 1
            self._stop.wait(SCRAPE_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# --- the daemon ----------------------------------------------------------------------------


class Daemon:
    def __init__(self, home: Path, name: str, env: dict[str, str], durability: str) -> None:
        self.socket = home / f"{name}.sock"
        began = time.monotonic()
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BUDGETD_", "OTEL_")) or k == "BUDGETD_CORE"
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "budgetd",
                "--socket",
                str(self.socket),
                "--no-tcp",
                "--state-dir",
                str(home / f"state-{name}"),
                "--durability",
                durability,
                "--log-format",
                "json",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment | env,
        )
        self.lines: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() - began > 120:
                self.stop()
                raise SystemExit(f"budgetd ({name}) did not start: {self.lines[-3:]}")
        self.ready = self.event("ready")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self.lines.append(record)
            if record.get("event") == "ready":
                self._ready.set()

    def event(self, name: str) -> dict[str, Any]:
        return next(r for r in self.lines if r.get("event") == name)

    def count(self, event: str) -> int:
        return sum(1 for r in list(self.lines) if r.get("event", "").startswith(event))

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    @property
    def metrics_url(self) -> str:
        metrics = str(self.ready.get("metrics", ""))
        return metrics.split("prometheus=", 1)[1].split(",", maxsplit=1)[0]

    def stop(self) -> None:
        self.process.terminate()
        try:
            # A down collector holds the exit for the final export's bound (5 s); the
            # measurement is over, so that wait is not worth a run's time.
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        if self.process.stderr is not None:
            self.process.stderr.close()


# --- one cell ------------------------------------------------------------------------------


@dataclass
class Cell:
    ops: float
    p50: float
    p99: float
    cpu_us: float
    busy: float
    client_us: float
    others: float  # CPUs' worth the rest of the machine used during the window
    exports: int  # scrapes answered, exports received, or failed exports logged
    failed: int  # Consume calls that did not answer OK, warm-up included
    errors: int = 0  # scrapes that failed


@dataclass
class Setup:
    home: Path
    receiver: Receiver
    down_port: int
    durability: str
    concurrency: int
    warmup: int
    calls: int
    order: list[list[str]] = field(default_factory=list)

    def env(self, cell: str) -> dict[str, str]:
        if cell == "off":
            return {}
        if cell == "prometheus":
            return {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "0"}
        port = self.receiver.port if cell == "otlp up" else self.down_port
        return {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_METRIC_EXPORT_INTERVAL": str(INTERVAL_MS),
        }


def run_cell(setup: Setup, cell: str, index: int) -> Cell:
    name = f"{index}-{cell.replace(' ', '-')}"
    daemon = Daemon(setup.home, name, setup.env(cell), setup.durability)
    metrics = str(daemon.ready.get("metrics", "off"))
    if (metrics == "off") != (cell == "off"):
        daemon.stop()
        raise SystemExit(f"cell {cell!r}: the daemon started with metrics {metrics!r}")
    scraper = Scraper(daemon.metrics_url) if cell == "prometheus" else None
    exported_before = setup.receiver.exports
    try:
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.metrics_bench",
                "--drive",
                daemon.target,
                str(daemon.process.pid),
                str(setup.concurrency),
                str(setup.warmup),
                str(setup.calls),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = load.communicate(timeout=900)
        if load.returncode != 0:
            raise SystemExit(f"the load generator failed in cell {cell!r} (exit {load.returncode})")
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        if scraper is not None:
            scraper.stop()
        exports = {
            "off": 0,
            "prometheus": scraper.scrapes if scraper is not None else 0,
            "otlp up": setup.receiver.exports - exported_before,
            "otlp down": daemon.count("metrics export failed"),
        }[cell]
        daemon.stop()
    return Cell(
        ops=result["ops"],
        p50=result["p50"],
        p99=result["p99"],
        cpu_us=result["cpu_us"],
        busy=result["busy"],
        client_us=result["client_us"],
        others=result["others"],
        exports=exports,
        failed=result["failed"],
        errors=scraper.errors if scraper is not None else 0,
    )


# --- the table -----------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


SPIN = (
    "import time\n"
    "t, c = time.perf_counter(), time.process_time()\n"
    "while time.perf_counter() - t < 0.5: pass\n"
    "print((time.process_time() - c) / (time.perf_counter() - t))"
)


def cpu_capacity() -> float:
    """How many CPUs' worth of time two processes spinning at once get: what the daemon
    and the load share (a VM may report 2 CPUs and give the pair 1)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    return sum(float(p.communicate(timeout=60)[0]) for p in spinners)


PAIRS = (("prometheus", "off"), ("otlp up", "off"), ("otlp down", "off"), ("otlp down", "otlp up"))


def _ratio(measure: str, top: Cell, bottom: Cell) -> float:
    """How `top` compares with `bottom` as a throughput ratio (above 1: top is faster).
    ops: measured throughput; cpu: the daemon's cpu per call, inverted (what a daemon
    with a core to itself would see); norm: the same with each cell's daemon cpu per call
    divided by its client's (the client does the same work per call in every cell, so
    it gauges how fast the machine was during that window)."""
    if measure == "ops":
        return top.ops / bottom.ops
    if measure == "cpu":
        return bottom.cpu_us / top.cpu_us
    return (bottom.cpu_us / bottom.client_us) / (top.cpu_us / top.client_us)


def table(setup: Setup, rounds: list[dict[str, Cell]], took: float, capacity: float) -> list[str]:
    def median_ratio(measure: str, top: str, bottom: str) -> float:
        return _median([_ratio(measure, r[top], r[bottom]) for r in rounds])

    lines = [
        f"budgetd metrics overhead — {core_kind()} core, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (two spinning processes got "
        f"{capacity:.1f} CPUs' worth at the start); unary Consume over the Unix socket from "
        f"a separate grpc.aio process, {setup.concurrency} concurrent callers; "
        f"{setup.durability} durability; per cell a fresh daemon, {setup.warmup:,} warm-up "
        f"calls then {setup.calls:,} measured; {len(rounds)} round(s), order rotated; OTLP "
        f"every {INTERVAL_MS} ms; {took:.0f} s in all",
        "",
        "medians over rounds; every ratio is the median of the rounds' ratios. daemon: its "
        "utime+stime, all threads, over the window; client: the load process's",
        "",
        f"{'metrics':<27} {'ops/s':>7} {'p50 µs':>7} {'p99 µs':>7} {'daemon':>7} "
        f"{'client':>7} {'daemon':>7} {'exports':>7}  {'vs off: ops':>11} {'cpu':>5} "
        f"{'norm':>5}  {'ops/s':>11}",
        f"{'':<27} {'':>7} {'':>7} {'':>7} {'µs/call':>7} {'µs/call':>7} {'cpu %':>7} "
        f"{'':>7}  {'':>11} {'':>5} {'':>5}  {'min-max':>11}",
        f"{'-' * 27} {'-' * 7} {'-' * 7} {'-' * 7} {'-' * 7} {'-' * 7} {'-' * 7} {'-' * 7}  "
        f"{'-' * 11} {'-' * 5} {'-' * 5}  {'-' * 11}",
    ]
    for cell in CELLS:
        cells = [r[cell] for r in rounds]
        exports = "-" if cell == "off" else f"{_median([c.exports for c in cells]):.0f}"
        errors = sum(c.errors for c in cells)
        if errors:
            exports += f" ({errors} failed)"
        spread = f"{min(c.ops for c in cells):,.0f}-{max(c.ops for c in cells):,.0f}"
        lines.append(
            f"{NAMES[cell]:<27} {_median([c.ops for c in cells]):>7,.0f} "
            f"{_median([c.p50 for c in cells]):>7.0f} {_median([c.p99 for c in cells]):>7.0f} "
            f"{_median([c.cpu_us for c in cells]):>7.0f} "
            f"{_median([c.client_us for c in cells]):>7.0f} "
            f"{_median([c.busy for c in cells]) * 100:>7.0f} {exports:>7}  "
            f"{median_ratio('ops', cell, 'off'):>10.2f}x "
            f"{median_ratio('cpu', cell, 'off'):>4.2f}x "
            f"{median_ratio('norm', cell, 'off'):>4.2f}x  {spread:>11}"
        )
    lines += [
        "",
        "exports: scrapes answered (prometheus), Exports received (up), failed exports the "
        "daemon logged (down), per cell, warm-up included. vs off, as throughput ratios: "
        "ops measured; cpu = the daemon's cpu per call off / on (a daemon with a core to "
        "itself); norm = the same, each cell's daemon cpu divided by its client's (the "
        "client's work per call is the same in every cell: it gauges how fast the machine "
        "was in that window, so norm is the steadiest on a shared machine)",
        "",
        "every cell, in the order run (others: CPUs' worth the rest of the machine used "
        "during the window; failed: Consume calls not answered OK, warm-up included)",
        "",
        f"{'round':<6} {'metrics':<27} {'ops/s':>7} {'daemon µs':>9} {'client µs':>9} "
        f"{'others':>7} {'failed':>7}",
    ]
    for number, (order, r) in enumerate(zip(setup.order, rounds, strict=True), start=1):
        for cell in order:
            c = r[cell]
            lines.append(
                f"{number:<6} {NAMES[cell]:<27} {c.ops:>7,.0f} {c.cpu_us:>9.0f} "
                f"{c.client_us:>9.0f} {c.others:>7.2f} {c.failed:>7}"
            )
    lines += [
        "",
        "ratios per round, ops / cpu / norm",
        "",
        f"{'round':<6} " + " ".join(f"{f'{a.split()[-1]}/{b.split()[-1]}':>17}" for a, b in PAIRS),
    ]
    for number, r in enumerate(rounds, start=1):
        shown = [
            "/".join(f"{_ratio(m, r[a], r[b]):.2f}" for m in ("ops", "cpu", "norm"))
            for a, b in PAIRS
        ]
        lines.append(f"{number:<6} " + " ".join(f"{x:>17}" for x in shown))
    lines.append("")
    for measure in ("ops", "cpu", "norm"):
        on_off = {cell: median_ratio(measure, cell, "off") for cell in CELLS[1:]}
        lines.append(
            f"on/off, {measure:<4}: "
            + ", ".join(f"{cell} {ratio:.2f}x" for cell, ratio in on_off.items())
            + f"; lowest {min(on_off.values()):.2f}x; down/up "
            f"{median_ratio(measure, 'otlp down', 'otlp up'):.2f}x"
        )
    failed = {cell: sum(r[cell].failed for r in rounds) for cell in CELLS}
    lines.append(
        "Consume calls not answered OK, all rounds (warm-up included): "
        + ", ".join(f"{cell} {n}" for cell, n in failed.items())
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["--drive"]:
        return drive_main(arguments[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="file to write the table to")
    parser.add_argument("--quick", action="store_true", help="one round of few calls (a smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds of the four cells (default 5)")
    parser.add_argument("--calls", type=int, help="measured calls per cell (default 3000)")
    parser.add_argument("--warmup", type=int, help="warm-up calls per cell (default 1000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers")
    parser.add_argument("--durability", default="memory", choices=("memory", "snapshot", "journal"))
    args = parser.parse_args(arguments)
    rounds = args.rounds or (1 if args.quick else 5)
    calls = args.calls or (500 if args.quick else 3_000)
    warmup = args.warmup if args.warmup is not None else THREADS
    began = time.monotonic()
    capacity = cpu_capacity()
    results: list[dict[str, Cell]] = []
    receiver = Receiver()
    # Bound and never listening: nothing accepts there, every connection is refused.
    down = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    down.bind(("127.0.0.1", 0))
    try:
        with tempfile.TemporaryDirectory(prefix="budgetd-bench-") as directory:
            setup = Setup(
                Path(directory),
                receiver,
                down.getsockname()[1],
                args.durability,
                args.concurrency,
                warmup,
                calls,
            )
            for number in range(rounds):
                order = list(CELLS[number % len(CELLS) :] + CELLS[: number % len(CELLS)])
                setup.order.append(order)
                found: dict[str, Cell] = {}
                for cell in order:
                    found[cell] = run_cell(setup, cell, number)
                    _progress(number, cell, found[cell])
                results.append(found)
    finally:
        down.close()
        receiver.stop()
    lines = table(setup, results, time.monotonic() - began, capacity)
    print("\n".join(lines))
    write_table(lines, args.out)
    return 0


def _progress(number: int, cell: str, result: Cell) -> None:
    print(
        f"round {number + 1} {cell:<10} {result.ops:>7,.0f} ops/s, "
        f"{result.cpu_us:.0f} cpu µs/call, {result.exports} exports",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
