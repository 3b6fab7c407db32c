"""A real `budgetd` process for end-to-end tests: started, called, signalled, killed.

The daemon logs JSON lines on stderr (`--log-format json`); a reader thread collects
them so a test can wait for an event ("ready", "draining", ...) with a bounded wait
instead of sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.v1 import budget_pb2_grpc as rpc

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0  # generous: a loaded CI machine is slow, a healthy daemon is not


class Daemon:
    def __init__(
        self,
        home: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        socket: Path | None = None,
    ):
        """`socket`: where the daemon will listen when `args` leave it to the default;
        without it the daemon is told `--socket <home>/budgetd.sock`."""
        self.home = home
        self.socket = socket or home / "budgetd.sock"
        command = [
            sys.executable,
            "-m",
            "budgetd",
            *(() if socket else ("--socket", str(self.socket))),
            "--tcp",
            "127.0.0.1:0",
            "--state-dir",
            str(home / "state"),
            "--log-format",
            "json",
            *args,
        ]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
        environment.update(env or {})
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.raw_stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ready: dict[str, Any] = {}

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.raw_stderr.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                record = {"event": "unparsed", "line": line}
            self.lines.append(record)
            self._new.put(record)
        self._new.put(None)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The first log record with this event (bounded wait; fails with the log)."""
        for seen in self.lines:
            if seen.get("event") == event:
                return seen
        while True:
            try:
                record = self._new.get(timeout=WAIT_S)
            except queue.Empty:
                raise AssertionError(f"no {event!r} in {WAIT_S} s: {self.log_text()}") from None
            if record is None:
                raise AssertionError(f"daemon ended before {event!r}: {self.log_text()}")
            if record.get("event") == event:
                return record

    def wait_for_nth(self, event: str, n: int) -> dict[str, Any]:
        """The n-th log record with this event (1-based; bounded wait)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            found = [seen for seen in self.lines if seen.get("event") == event]
            if len(found) >= n:
                return found[n - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {n} x {event!r} in {WAIT_S} s: {self.log_text()}")
            try:  # each new line wakes this up: the reader lists it before queueing it
                if self._new.get(timeout=left) is None:
                    raise AssertionError(f"daemon ended before {n} x {event!r}")
            except queue.Empty:
                continue

    def start(self) -> Daemon:
        self.ready = self.wait_for("ready")
        return self

    @property
    def tcp_target(self) -> str:
        return str(self.ready["tcp"])

    @property
    def unix_target(self) -> str:
        return f"unix:{self.socket}"

    def channel(self, target: str | None = None) -> grpc.Channel:
        return grpc.insecure_channel(target or self.unix_target)

    def budget(self, target: str | None = None) -> rpc.BudgetServiceStub:
        return rpc.BudgetServiceStub(self.channel(target))

    def admin(self, target: str | None = None) -> rpc.BudgetAdminServiceStub:
        return rpc.BudgetAdminServiceStub(self.channel(target))

    def health(self, target: str | None = None) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel(target))
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S)
        return int(answer.status)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self) -> int:
        code = self.process.wait(timeout=WAIT_S)
        self._reader.join(timeout=WAIT_S)  # the whole log is read once the process ended
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code

    def stop(self) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()

    def log_text(self) -> str:
        return "".join(self.raw_stderr)


def whole_lines(path: Path) -> list[str]:
    """A file another process appends lines to, as its whole lines so far (the last may
    be half written while this reads: it counts once its newline is there)."""
    return path.read_text().split("\n")[:-1]


def run_budgetd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`budgetd ARGS` to completion (check-config, start failures)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "budgetd", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
