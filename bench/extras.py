"""The side-by-side bench's runs beyond the cells: the load generator as a child, Consume
with Subscribe readers against none, a daemon filled to a million ledgers, and the
existing benches run as they run alone (their tables embedded in the report)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import procstat, recording
from bench.processes import Budgetd, LogReader, Processes

EMBEDDED = ("core", "service", "metrics", "durability")
LOADGEN_SLACK_S = 120.0  # start-up, connections and the stop, beyond warm-up + window
FILL_BATCH = 256  # operations per Batch while filling (the daemon's default bound)
IDEMPOTENCY_FILL_MAX = 2_000_000  # Consumes at most, to fill the request-id memory


def loadgen(processes: Processes, args: list[str], seconds: float) -> dict[str, Any]:
    """One run of the load generator; its JSON line."""
    process = processes.start(
        [sys.executable, "-m", "bench.loadgen", *args], stdout=subprocess.PIPE, stderr=None
    )
    try:
        out, _ = process.communicate(timeout=seconds + LOADGEN_SLACK_S)
    finally:
        processes.stop(process)
    lines = out.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the load generator failed (exit {process.returncode}): {args}")
    return dict(json.loads(lines[-1]))


def _consume_args(
    target: str, pid: int, concurrency: int, threads: int, duration: float, warmup: float
) -> list[str]:
    return [
        "--target", target, "--operation", "consume", "--concurrency", str(concurrency),
        "--duration", str(duration), "--warmup", str(warmup), "--server-pid", str(pid),
        "--threads", str(threads),
    ]  # fmt: skip


# --- Consume with Subscribe readers --------------------------------------------------------


def with_readers(
    processes: Processes, daemon: Budgetd, readers: int, args: list[str], seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The load generator's run while `readers` Subscribe streams (another process) read
    every event; the run's figures and what the readers got."""
    argv = [sys.executable, "-m", "bench.subscribers", "--target", daemon.target("uds")]
    process = processes.start(
        [*argv, "--readers", str(readers)], stdout=subprocess.PIPE, stderr=None
    )
    log = LogReader(process.stdout, "ready")
    try:
        log.wait(process, "the Subscribe readers")
        result = loadgen(processes, args, seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.join()
        processes.stop(process)
    summary: dict[str, Any] = next((r for r in reversed(log.lines) if "events" in r), {})
    return result, summary


def subscribers(
    processes: Processes,
    daemon: Budgetd,
    readers: int,
    repetitions: int,
    timing: tuple[float, float],
) -> dict[str, Any]:
    """Consume at c=64 over the socket with `readers` readers and with none, the two
    back to back in each repetition (their order alternating); the ratio per repetition."""
    duration, warmup = timing
    args = _consume_args(daemon.target("uds"), daemon.pid, 64, 1_000, duration, warmup)
    runs = []
    for repetition in range(repetitions):
        first_readers = repetition % 2 == 1
        pair: dict[str, Any] = {}
        for readers_on in (first_readers, not first_readers):
            if readers_on:
                pair["readers"], pair["delivered"] = with_readers(
                    processes, daemon, readers, args, duration + warmup
                )
            else:
                pair["none"] = loadgen(processes, args, duration + warmup)
        pair["ratio"] = pair["readers"]["ops_per_s"] / max(pair["none"]["ops_per_s"], 1e-9)
        _say(
            f"[{repetition + 1}] Consume c=64 with {readers} readers "
            f"{pair['readers']['ops_per_s']:,.0f} ops/s, none {pair['none']['ops_per_s']:,.0f}"
        )
        runs.append(pair)
    return {
        "readers": readers,
        "runs": runs,
        "ratio": statistics.median(r["ratio"] for r in runs),
        "ratio_spread": [min(r["ratio"] for r in runs), max(r["ratio"] for r in runs)],
    }


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- a million ledgers ---------------------------------------------------------------------


def _fill_request_memory(target: str, threads: int) -> int:
    """Consume over the cells' `threads` labels until the daemon's memory of request ids
    is full (by count or by bytes), so that what it holds is the same before and after
    the ledgers are added: the RSS growth is then the ledgers'. Returns the Consumes."""
    done = 0
    chunk = 50 * FILL_BATCH
    while done < IDEMPOTENCY_FILL_MAX:
        info = recording.server_info(target)
        full_count = info.remembered_requests >= info.remembered_requests_max
        full_bytes = info.remembered_request_bytes >= 0.98 * info.remembered_request_bytes_max
        if full_count or full_bytes:
            break
        recording.consume_batches(target, range(done + 1, done + chunk + 1), threads)
        done += chunk
    return done


def million(
    processes: Processes, home: Path, ledgers: int, timing: tuple[float, float], threads: int
) -> dict[str, Any]:
    """A fresh daemon: Consume p50 at c=1 over `threads` ledgers, then filled with Batch
    Consumes of distinct thread labels to `ledgers` ledgers, then the same p50 over all
    of them; RSS per ledger added, and the collector's pauses the daemon reports."""
    duration, warmup = timing
    daemon = Budgetd(processes, home, "million", "memory", max_ledgers=ledgers + ledgers // 10)
    target = daemon.target("uds")
    try:
        recording.touch_ledgers(target, threads)
        memory_fill = _fill_request_memory(target, threads)
        small = loadgen(
            processes,
            _consume_args(target, daemon.pid, 1, threads, duration, warmup),
            duration + warmup,
        )
        before = recording.server_info(target)
        rss_before = procstat.rss_bytes(daemon.pid)
        began = time.monotonic()
        filled = recording.consume_batches(target, range(1, ledgers + 1), ledgers)
        fill_s = time.monotonic() - began
        after = recording.server_info(target)
        rss_after = procstat.rss_bytes(daemon.pid)
        _say(f"filled to {after.ledgers:,} ledgers in {fill_s:.0f} s")
        large = loadgen(
            processes,
            _consume_args(target, daemon.pid, 1, ledgers, duration, warmup),
            duration + warmup,
        )
        last = recording.server_info(target)
    finally:
        daemon.stop()
    added = max(after.ledgers - before.ledgers, 1)
    return {
        "ledgers_before": before.ledgers,
        "ledgers": after.ledgers,
        "request_memory_fill": memory_fill,
        "remembered_requests": after.remembered_requests,
        "remembered_request_bytes": after.remembered_request_bytes,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_per_ledger": (rss_after - rss_before) / added,
        "fill_consumes": filled,
        "fill_seconds": fill_s,
        "p50_small_us": small["p50_us"],
        "p50_large_us": large["p50_us"],
        "p50_ratio": large["p50_us"] / max(small["p50_us"], 1e-9),
        "small": small,
        "large": large,
        "gc_collections": last.gc_collections,
        "longest_gc_pause_ms": last.longest_gc_pause.ToTimedelta().total_seconds() * 1000,
    }


# --- the existing benches ------------------------------------------------------------------


def embedded(
    processes: Processes, names: tuple[str, ...], out_dir: Path, quick: bool, ledgers: int
) -> list[dict[str, Any]]:
    """Each existing bench as `make bench` ran it before, its table read back."""
    runs = []
    for name in names:
        suffix = "-quick" if quick else ""
        out = out_dir / f"{name}{suffix}.txt"
        argv = [sys.executable, "-m", f"bench.{name}_bench", "--out", str(out)]
        if quick and name in ("core", "metrics"):
            argv.append("--quick")
        if name == "durability":
            argv += ["--ledgers", str(ledgers)]
        _say(f"running bench.{name}_bench")
        began = time.monotonic()
        process = processes.start(
            argv, interrupt=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _, errors = process.communicate(timeout=3600)
        finally:
            processes.stop(process)
        text = out.read_text(encoding="utf-8") if out.exists() and process.returncode == 0 else ""
        runs.append(
            {
                "name": name,
                "file": str(out),
                "seconds": time.monotonic() - began,
                "exit": process.returncode,
                "text": text or f"(failed, exit {process.returncode}): {errors[-2000:]}",
            }
        )
    return runs
