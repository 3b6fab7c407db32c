"""The SDK on its own: a fresh venv, `pip install ./client`, then the SDK and budgetctl.

Goal: `budgetd-client` (the SDK and budgetctl) installs and works without the daemon's
distribution or its dependencies. Method: exactly a user's path — `python -m venv` (no
system site-packages), `pip install ./client` from a copy of the checkout's client/
(only its dependencies come from the package index), then that venv's Python imports
`budgetd_client` but cannot import `budgetd`, uvloop or grpcio-reflection, its SDK
records usage in a real daemon started by the test (from the development venv), and
its `budgetctl` reads it back, puts a policy file (checked by the client's own grammar)
and reports a bad one as the daemon's config would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import budgetd_client
from budgetd.v1 import budget_pb2 as pb
from tests.e2e.support import REPO, Daemon

PIP_TIMEOUT_S = 600.0  # a cold pip cache downloads grpcio and protobuf
RUN_TIMEOUT_S = 60.0


def clean_env() -> dict[str, str]:
    """The caller's environment without what would leak the development tree in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not key.startswith("BUDGETD_")
    }
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(
    command: Sequence[str | Path], cwd: Path, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `pip install ./client` done in a copy of the checkout."""
    home = tmp_path_factory.mktemp("sdk-alone")
    checkout = home / "checkout"
    shutil.copytree(
        REPO / "client",
        checkout / "client",
        ignore=shutil.ignore_patterns("node", "build", "*.egg-info", "__pycache__"),
    )
    venv = home / "venv"
    ok(run([sys.executable, "-m", "venv", venv], home))
    config = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in config
    ok(run([venv / "bin" / "python", "-m", "pip", "install", "./client"], checkout, PIP_TIMEOUT_S))
    return venv


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    started = Daemon(tmp_path)
    try:
        yield started.start()
    finally:
        started.kill()


def test_the_sdk_alone_imports_without_the_daemon_or_its_dependencies(
    venv: Path, tmp_path: Path
) -> None:
    check = (
        "import importlib.util, json, budgetd_client, budgetd_client.ctl\n"
        "print(json.dumps({'file': budgetd_client.__file__,\n"
        "    'version': budgetd_client.__version__,\n"
        "    'absent': [name for name in ('budgetd', 'uvloop', 'grpc_reflection',\n"
        "        'grpc_health', 'mypy_extensions') if importlib.util.find_spec(name) is None]}))\n"
    )
    found = json.loads(ok(run([venv / "bin" / "python", "-c", check], tmp_path)))
    assert Path(found["file"]).is_relative_to(venv), found["file"]  # installed, not the tree
    assert found["version"] == budgetd_client.__version__
    assert found["absent"] == [
        "budgetd",
        "uvloop",
        "grpc_reflection",
        "grpc_health",
        "mypy_extensions",
    ]
    assert (venv / "bin" / "budgetctl").exists()
    assert not (venv / "bin" / "budgetd").exists()
    version = run([venv / "bin" / "budgetctl", "--version"], tmp_path)
    assert (version.returncode, version.stdout) == (0, f"budgetctl {budgetd_client.__version__}\n")


AGENT = """
import json, sys
from budgetd_client import BudgetClient, Usage
with BudgetClient(sys.argv[1]) as client:
    result = client.consume({"agent": "writer", "thread": "t1"}, Usage(1200, 300, model="gpt-4o"))
    print(json.dumps({"offline": result.offline, "ledgers": [b.key for b in result.ledgers]}))
"""

TEAM = """\
[[policies]]
name = "team-research"
match = { tenant = "research" }
caps = { cost_usd = "250.00", total_tokens = 50_000_000 }
window = { kind = "calendar", unit = "month", time_zone = "Europe/Paris" }
"""


def test_the_sdk_and_budgetctl_of_that_venv_talk_to_a_running_daemon(
    venv: Path, daemon: Daemon, tmp_path: Path
) -> None:
    python, budgetctl = venv / "bin" / "python", venv / "bin" / "budgetctl"
    target = daemon.unix_target
    consumed = json.loads(ok(run([python, "-c", AGENT, target], tmp_path)))
    assert consumed["offline"] is False and "per-thread{thread=t1}" in consumed["ledgers"]

    status = json.loads(ok(run([budgetctl, "--target", target, "status", "--json"], tmp_path)))
    keys = {ledger["key"] for ledger in status["ledgers"]}
    assert "per-thread{thread=t1}" in keys and "per-agent{agent=writer}" in keys
    ledger = json.loads(
        ok(
            run(
                [budgetctl, "--target", target, "ledger", "per-thread{thread=t1}", "--json"],
                tmp_path,
            )
        )
    )
    assert ledger["ledger"]["totals"]["total_tokens"] == 1500

    # A bare socket path is a target too, and a policy file is checked by the client alone.
    (tmp_path / "team.toml").write_text(TEAM)
    put = run([budgetctl, "--target", str(daemon.socket), "policies", "put", "team.toml"], tmp_path)
    assert (put.returncode, put.stdout, put.stderr) == (0, "created policy team-research\n", "")
    stored = daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies
    team = next(policy for policy in stored if policy.name == "team-research")
    assert team.window.calendar.time_zone == "Europe/Paris"
    assert {(cap.dimension, cap.limit) for cap in team.caps} == {
        (pb.DIMENSION_TOTAL_TOKENS, 50_000_000),
        (pb.DIMENSION_COST_MICRO_USD, 250_000_000),
    }

    (tmp_path / "bad.toml").write_text(TEAM.replace('"250.00"', '"12.5.0"'))
    bad = run([budgetctl, "--target", target, "policies", "put", "bad.toml"], tmp_path)
    assert (bad.returncode, bad.stdout) == (5, "")
    assert bad.stderr == "budgetctl: bad.toml:policies[0].caps.cost_usd: not a number: '12.5.0'\n"
