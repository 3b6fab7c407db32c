"""What a newcomer runs: `make run` (with or without a C compiler) and `budgetd --version`.

Goal: `make run` needs only Python: without a C compiler it runs the pure-Python core
and says so in one line, instead of failing; its set-up is quiet (nothing else is
printed before the daemon's own log). Method: run the real `make run` on this suite's
venv with `CC` naming a compiler that does not exist, read everything it prints, wait
for the daemon's "ready" line (`core=pure-python`), then stop the daemon with SIGTERM.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import budgetd
from tests.e2e.support import REPO, WAIT_S, run_budgetd

VENV = Path(sys.prefix)
PURE_LINE = (
    "no C compiler or Python headers (gcc, python3-dev): running the pure-Python core (slower)"
)


def make_command(*args: str) -> list[str]:
    return ["make", "--no-print-directory", f"VENV={VENV}", *args]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
    env.update(extra)
    return env


def assert_the_venv_is_set_up_by_make() -> None:
    """`make run` below must not set anything up: the venv is the one make made, current."""
    assert shutil.which("make"), "make is needed (README: make run)"
    assert sys.prefix != sys.base_prefix, f"run the suite from a venv, not {sys.executable}"
    check = subprocess.run(
        make_command("-q", f"{VENV}/.installed"),
        cwd=REPO,
        env=environment(),
        capture_output=True,
        timeout=WAIT_S,
        check=False,
    )
    assert check.returncode == 0, (
        f"{VENV} is not set up by make or is out of date: run `make test` (or `make run`)"
    )


def test_make_run_without_a_c_compiler_runs_the_pure_core(tmp_path: Path) -> None:
    assert_the_venv_is_set_up_by_make()
    args = f"--socket {tmp_path}/s.sock --tcp 127.0.0.1:0 --state-dir {tmp_path}/state"
    process = subprocess.Popen(
        make_command("run", f"ARGS={args} --log-format json"),
        cwd=REPO,
        env=environment(CC=str(tmp_path / "no-cc")),  # a compiler that does not exist
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    printed: list[str] = []
    ready: dict[str, Any] = {}
    try:
        while not ready:
            line = lines.get(timeout=WAIT_S)
            assert line is not None, f"make run ended before the daemon was ready: {printed}"
            try:
                record = json.loads(line)
            except ValueError:
                printed.append(line.rstrip("\n"))
                continue
            if record.get("event") == "ready":
                ready = record
        assert printed == [PURE_LINE]  # one line, and nothing from the set-up
        assert ready["core"] == "pure-python"
        os.kill(int(ready["pid"]), signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=WAIT_S)
        reader.join(timeout=WAIT_S)
        assert process.stdout is not None
        process.stdout.close()


def test_budgetd_version() -> None:
    expected = f"budgetd {budgetd.__version__}\n"
    result = run_budgetd("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")
    script = Path(sys.executable).parent / "budgetd"  # the console script of this venv
    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=WAIT_S, check=False
    )
    assert (result.returncode, result.stdout) == (0, expected)
