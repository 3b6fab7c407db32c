"""The processes of the side-by-side bench: budgetd, the floor, and how each is stopped.

Every process is started through a `Processes` registry that stops all of them (TERM,
then KILL) when the run ends, whether it ends well, with an error or with Ctrl-C.
Children run from the repository root with it on PYTHONPATH (after what was there, so
`make bench`'s compiled tree stays first), and without the caller's BUDGETD_* and
OTEL_* settings (except BUDGETD_CORE): a daemon configured by the environment of
whoever runs the bench would measure something else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BUDGETD_", "OTEL_")) or k == "BUDGETD_CORE"
    }
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*path, str(ROOT)])
    return env | (extra or {})


class Processes:
    """Every child of the run, stopped by `stop_all` (newest first)."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[str]] = []
        self.interrupt: set[int] = set()

    def start(
        self, argv: Sequence[str], interrupt: bool = False, **kwargs: Any
    ) -> subprocess.Popen[str]:
        """Start a child; `interrupt`: stop it with SIGINT, for a bench that starts
        daemons of its own and stops them in its `finally` (SIGTERM would skip that)."""
        kwargs.setdefault("env", child_env())
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(list(argv), cwd=ROOT, text=True, **kwargs)
        self.children.append(process)
        if interrupt:
            self.interrupt.add(process.pid)
        return process

    def stop(self, process: subprocess.Popen[str], timeout: float = 15.0) -> None:
        if process.poll() is None:
            if process.pid in self.interrupt:
                process.send_signal(signal.SIGINT)
            else:
                process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        if process in self.children:
            self.children.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.children)):
            self.stop(process, timeout=5.0)


class LogReader:
    """Reads a child's JSON log lines on a thread (a full pipe would block the child)."""

    def __init__(self, stream: Any, ready: str) -> None:
        self.lines: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._wanted = ready
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            self.lines.append(record)
            if record.get("event") in (self._wanted, "cannot start") or record.get("ready"):
                self.ready.set()
        self.ready.set()  # the child is gone: whoever waits sees it did not start

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the child's last lines (its output ends when it exits)."""
        self._thread.join(timeout)

    def first(self, event: str) -> dict[str, Any] | None:
        return next((r for r in self.lines if r.get("event") == event), None)

    def wait(self, process: subprocess.Popen[str], what: str) -> dict[str, Any]:
        began = time.monotonic()
        while not self.ready.wait(0.1):
            if time.monotonic() - began > START_TIMEOUT_S:
                break
        ready = self.first(self._wanted) or next((r for r in self.lines if r.get("ready")), None)
        if ready is None:
            raise RuntimeError(f"{what} did not start (exit {process.poll()}): {self.lines[-3:]}")
        return ready


BENCH_POLICIES = """
[[policies]]
name = "per-thread"
per = ["thread"]
caps = { total_tokens = 100000000000 }

[[policies]]
name = "per-agent"
per = ["agent"]
caps = { total_tokens = 1000000000000 }

[[policies]]
name = "daily"
caps = { total_tokens = 1000000000000 }
window = { kind = "calendar", unit = "day", time_zone = "UTC" }

[[policies]]
name = "model-usage"
per = ["model"]
"""


def daemon_config(max_ledgers: int | None = None) -> str:
    """The daemon's config: bench.core_bench's four policies (one call, four ledgers;
    caps no bench run reaches, so nothing is ever denied); anonymous loopback TCP callers
    may spend, unlimited in rate (the default 2,000/s shared by all anonymous callers
    would measure the limiter); streams bounded well above the bench's 64 per cell."""
    limits = f"\n[limits]\nmax_ledgers = {max_ledgers}\n" if max_ledgers else ""
    return (
        "embedded_policies = false\n\n"
        '[auth]\nanonymous_tcp = "agent"\nrate_per_second = 0\n\n'
        "[events]\nmax_streams = 512\n" + limits + BENCH_POLICIES
    )


class Budgetd:
    """A budgetd process on a Unix socket and a free loopback TCP port."""

    def __init__(
        self,
        processes: Processes,
        home: Path,
        name: str,
        durability: str = "memory",
        max_ledgers: int | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        config = home / f"{name}.toml"
        config.write_text(daemon_config(max_ledgers), encoding="utf-8")
        self.socket = home / f"{name}.sock"
        argv = [sys.executable, "-m", "budgetd", "--config", str(config)]
        argv += ["--socket", str(self.socket), "--tcp", "127.0.0.1:0"]
        argv += ["--state-dir", str(home / f"{name}-state"), "--durability", durability]
        argv += ["--log-format", "json", *extra]
        self.processes = processes
        self.process = processes.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log = LogReader(self.process.stderr, "ready")
        ready = self.log.wait(self.process, f"budgetd ({name})")
        self.pid = int(ready.get("pid", self.process.pid))
        self.tcp = str(ready["tcp"])
        self.core = str(ready.get("core", "?"))
        self.durability = durability

    def target(self, transport: str) -> str:
        return f"unix:{self.socket}" if transport == "uds" else self.tcp

    def stop(self) -> None:
        self.processes.stop(self.process, timeout=30.0)


class Floor:
    """The floor (bench.floor) answering with replies recorded from budgetd."""

    def __init__(self, processes: Processes, home: Path, replies: Path) -> None:
        self.socket = home / "floor.sock"
        argv = [sys.executable, "-m", "bench.floor", "--replies", str(replies)]
        argv += ["--socket", str(self.socket), "--tcp", "127.0.0.1:0"]
        self.processes = processes
        self.process = processes.start(argv, stdout=subprocess.PIPE, stderr=None)
        self.log = LogReader(self.process.stdout, "ready")
        ready = self.log.wait(self.process, "the floor")
        self.pid = int(ready["pid"])
        self.tcp = str(ready["tcp"])

    def target(self, transport: str) -> str:
        return f"unix:{self.socket}" if transport == "uds" else self.tcp

    def stop(self) -> None:
        self.processes.stop(self.process)
