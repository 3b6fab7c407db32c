"""budgetctl against a real in-process server: every command, --json, exit codes.

`main` is called in-process (capsys captures its output; stdout is not a terminal, so
human output must be plain text without escape codes). State is set up with the raw
stubs first, the way agents would have left it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd.core import Limits, Policy
from budgetd.v1 import budget_pb2 as pb
from budgetd_client.ctl import Exit, commands, main
from budgetd_client.ctl.errors import from_rpc
from tests.service.support import START, Served, serve

assert START == 1_800_000_000.0  # WHEN below is this instant

ANSI = re.compile(r"\x1b\[")
THREAD = {"agent": "writer", "thread": "t1"}
THREAD_KEY = "per-thread{thread=t1}"
WHEN = "2027-01-15T08:00:00Z"  # the test clock's START, as budgetctl prints it
TEAM_TOML = """\
# Two policies, with the daemon config's friendly spellings.
[[policies]]
name = "team-research"
description = "Research team, monthly spend"
match = { tenant = "research" }
caps = { cost_usd = "250.00", total_tokens = 50_000_000 }
window = { kind = "calendar", unit = "month", time_zone = "Europe/Paris" }
enforcement = "soft"
thresholds = [{ percent = 50, severity = "warning" }, { percent = 80, severity = "critical" }]

[[policies]]
name = "per-user-tpm"
match = { tenant = "research" }
per = ["user"]
caps = { total_tokens = 200_000, run_duration = "2h" }
window = { kind = "sliding", duration = "1m" }
"""

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def ctl(served: Served, capsys: pytest.CaptureFixture[str]) -> Run:
    """budgetctl against `served`: (exit code, stdout, stderr)."""
    return runner(served, capsys)


def runner(served: Served, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--target", served.target, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def consume(
    served: Served,
    request_id: str,
    tokens: int = 1000,
    labels: dict[str, str] | None = None,
    **usage: Any,
) -> None:
    served.budget.Consume(
        pb.ConsumeRequest(
            request_id=request_id,
            labels=labels or THREAD,
            usage=pb.Usage(input_tokens=tokens, output_tokens=tokens // 2, **usage),
        )
    )


def plain(text: str) -> str:
    assert not ANSI.search(text), f"escape codes in plain output: {text!r}"
    return text


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("budgetctl: ")
    assert "Traceback" not in err
    return lines[0]


# --- help and usage ------------------------------------------------------------------


def test_help_documents_every_command_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == Exit.OK
    out = capsys.readouterr().out
    for command in ("status", "ledger", "policies", "reset", "runs", "snapshot", "watch"):
        assert command in out
    for code in ("0", "1", "2", "3", "4", "5", "6"):
        assert re.search(rf"^  {code} +\S", out, re.MULTILINE), code
    assert "daemon unavailable" in out and "not found" in out
    assert main(["runs", "--help"]) == Exit.OK
    assert "no call that lists runs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["status", "--min-state", "purple"],
        ["status", "--selector", "no-equals-sign"],
        ["watch", "--kind", "nonsense"],
        ["watch", "--count", "0"],
        ["--timeout", "0", "status"],
        ["policies"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == Exit.USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_conflicting_selectors_are_a_usage_error(ctl: Run) -> None:
    code, _, err = ctl("status", "--selector", "agent=a", "--selector", "agent=b")
    assert code == Exit.USAGE
    assert "agent" in one_error_line(err)


# --- status --------------------------------------------------------------------------


def test_status_shows_capped_ledgers_and_meters_as_plain_text(served: Served, ctl: Run) -> None:
    for i in range(3):
        consume(served, f"c{i}", model="gpt-4o", latency_ms=400)
    code, out, err = ctl("status")
    assert code == Exit.OK and err == ""
    plain(out)
    row = next(line for line in out.splitlines() if line.startswith(THREAD_KEY))
    assert row.split() == [THREAD_KEY, "ok", "total_tokens", "4,500", "100,000", "4%", "0"]
    assert "Meters" in out
    meter = next(line for line in out.splitlines() if line.startswith("agent-usage{agent=writer}"))
    assert meter.split()[1:3] == ["4,500", "3"]  # tokens, requests
    assert "$" in meter  # cost in USD
    # Columns are aligned: every row of the capped table starts its DIMENSION at one offset.
    table = out.split("\n\n")[0].splitlines()[1:]
    assert len({line.index("total_tokens") for line in table if "total_tokens" in line}) == 1


def test_status_json_is_the_ledger_list(served: Served, ctl: Run) -> None:
    consume(served, "c1", tokens=80_000)  # 120,000 total: over the 100k per-thread cap
    code, out, _ = ctl("status", "--json")
    assert code == Exit.OK
    data = json.loads(out)
    assert data["next_page_token"] == ""
    by_key = {ledger["key"]: ledger for ledger in data["ledgers"]}
    assert list(by_key) == sorted(by_key)
    thread = by_key[THREAD_KEY]
    assert thread["state"] == "LEDGER_STATE_EXHAUSTED"
    assert thread["dimensions"] == [
        {
            "dimension": "DIMENSION_TOTAL_TOKENS",
            "used": 120_000,
            "reserved": 0,
            "limit": 100_000,
            "remaining": 0,
            "percent": 120,
        }
    ]
    assert by_key["agent-usage{agent=writer}"]["dimensions"] == []
    assert by_key["agent-usage{agent=writer}"]["totals"]["total_tokens"] == 120_000


def test_global_options_work_after_the_command_too(served: Served, ctl: Run) -> None:
    consume(served, "c1")
    code, out, _ = ctl("status", "--json", "--timeout", "3")
    assert code == Exit.OK
    assert json.loads(out)["ledgers"]


def test_status_filters(served: Served, ctl: Run) -> None:
    consume(served, "a", tokens=60_000)  # 90k: per-thread t1 at 90 % (critical)
    consume(served, "b", labels={"agent": "critic", "thread": "t2"})

    def keys(*argv: str) -> list[str]:
        code, out, _ = ctl("status", "--json", *argv)
        assert code == Exit.OK
        return [ledger["key"] for ledger in json.loads(out)["ledgers"]]

    assert keys("--policy", "per-thread") == [THREAD_KEY, "per-thread{thread=t2}"]
    assert keys("--selector", "thread=t2") == ["per-thread{thread=t2}"]
    assert keys("--selector", "agent=*", "thread=t1") == []  # per-agent ledgers lack `thread`
    assert keys("--min-state", "critical") == [THREAD_KEY]
    code, out, _ = ctl("status", "--min-state", "exhausted")
    assert (code, plain(out).strip()) == (Exit.OK, "no ledgers match")


def test_status_fetches_every_page_but_stops_at_the_bound(
    served: Served, ctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        consume(served, f"c{i}", labels={"thread": f"t{i}"})
    monkeypatch.setattr(commands, "PAGE_SIZE", 2)
    code, out, err = ctl("status", "--json", "--policy", "per-thread")
    assert (code, err) == (Exit.OK, "")
    assert len(json.loads(out)["ledgers"]) == 5  # three pages of two
    monkeypatch.setattr(commands, "MAX_PAGES", 2)
    code, out, err = ctl("status", "--json", "--policy", "per-thread")
    assert code == Exit.OK
    data = json.loads(out)
    assert len(data["ledgers"]) == 4 and data["next_page_token"]
    assert "stopped after 2 pages" in one_error_line(err)


def test_color_always_renders_rich_tables(served: Served, ctl: Run) -> None:
    consume(served, "c1", tokens=70_000)  # per-thread at 105k: exhausted, in red
    code, out, _ = ctl("--color", "always", "status")
    assert code == Exit.OK
    assert ANSI.search(out)
    assert "exhausted" in out


# --- ledger --------------------------------------------------------------------------


def test_ledger_shows_one_ledger_in_full(served: Served, ctl: Run) -> None:
    consume(served, "c1", model="gpt-4o", latency_ms=300)
    consume(served, "c2", cost_micro_usd=12_500_000, latency_ms=500)
    served.budget.Reserve(
        pb.ReserveRequest(request_id="r1", labels=THREAD, estimate=pb.Usage(input_tokens=700))
    )
    code, out, _ = ctl("ledger", THREAD_KEY)
    assert code == Exit.OK
    plain(out)
    assert re.search(r"^policy +per-thread$", out, re.MULTILINE)
    assert re.search(r"^labels +thread=t1$", out, re.MULTILINE)
    assert re.search(rf"^window +since {WHEN} \(lifetime\)$", out, re.MULTILINE)
    assert re.search(r"^reservations +1$", out, re.MULTILINE)
    row = next(line for line in out.splitlines() if line.startswith("total_tokens"))
    assert row.split() == ["total_tokens", "3,000", "700", "100,000", "96,300", "3%"]
    assert re.search(r"cost +\$12\.5\d*$", out, re.MULTILINE)  # USD, the gpt-4o call priced
    assert "400ms (2 timed requests)" in out  # average latency
    assert f"first use    {WHEN}" in out


def test_ledger_json_and_a_calendar_window(served: Served, ctl: Run) -> None:
    consume(served, "c1")
    code, out, _ = ctl("ledger", "daily", "--json")
    assert code == Exit.OK
    ledger = json.loads(out)["ledger"]
    assert ledger["key"] == "daily"
    assert ledger["window_start"] == "2027-01-15T00:00:00Z"
    assert ledger["window_end"] == "2027-01-16T00:00:00Z"
    assert ledger["totals"]["requests"] == 1
    code, out, _ = ctl("ledger", "daily")
    assert "2027-01-15T00:00:00Z .. 2027-01-16T00:00:00Z" in plain(out)


def test_unknown_ledger_is_exit_4(ctl: Run) -> None:
    code, out, err = ctl("ledger", "per-thread{thread=nope}")
    assert (code, out) == (Exit.NOT_FOUND, "")
    assert "not found" in one_error_line(err)


# --- unavailable and other statuses ----------------------------------------------------


def test_no_daemon_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = f"unix:{tmp_path / 'nothing-listens.sock'}"
    for argv in (["status"], ["ledger", "x"], ["watch"], ["policies", "list"], ["snapshot"]):
        assert main(["--target", target, *argv]) == Exit.UNAVAILABLE
        out, err = capsys.readouterr()
        assert out == ""
        assert f"daemon unavailable at {target}" in one_error_line(err)


def test_a_bare_socket_path_is_a_unix_target(served: Served, ctl: Run) -> None:
    code, out, _ = ctl("--target", str(served.socket), "policies", "list")
    assert code == Exit.OK and "per-thread" in out


def test_the_default_target_comes_from_budgetd_target(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BUDGETD_TARGET", served.target)
    assert main(["snapshot", "--json"]) == Exit.OK
    assert json.loads(capsys.readouterr().out)["path"]


def test_server_invalid_argument_is_exit_5(ctl: Run) -> None:
    code, _, err = ctl("status", "--selector", "Bad=x")
    assert code == Exit.INVALID
    assert "selector['Bad']" in one_error_line(err)


class FakeCall(grpc.RpcError, grpc.Call):
    """A failed call as the sync stubs raise it, for statuses hard to cause for real."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    # grpc-stubs types this differently in RpcError and in Call; no signature fits both.
    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:  # type: ignore[override]
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


@pytest.mark.parametrize(
    ("code", "exit_code", "words"),
    [
        (grpc.StatusCode.UNAVAILABLE, Exit.UNAVAILABLE, "daemon unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Exit.UNAVAILABLE, "no answer from t within 2s"),
        (grpc.StatusCode.NOT_FOUND, Exit.NOT_FOUND, "why"),
        (grpc.StatusCode.INVALID_ARGUMENT, Exit.INVALID, "invalid argument: why"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Exit.EXHAUSTED, "why"),
        (grpc.StatusCode.ALREADY_EXISTS, Exit.EXHAUSTED, "why"),
        (grpc.StatusCode.PERMISSION_DENIED, Exit.ERROR, "permission_denied: why"),
    ],
)
def test_every_status_has_its_exit_code(code: grpc.StatusCode, exit_code: Exit, words: str) -> None:
    error = from_rpc(FakeCall(code, "why\nwith a second line"), "t", 2.0)
    assert error.code == exit_code
    assert words in error.message


def test_an_unexpected_error_is_one_line_and_exit_1(
    ctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: commands.Ctl) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "snapshot", broken)
    code, _, err = ctl("snapshot")
    assert code == Exit.ERROR
    assert one_error_line(err) == "budgetctl: unexpected error: RuntimeError: boom"


# --- policies ------------------------------------------------------------------------


def test_policies_list(ctl: Run) -> None:
    code, out, _ = ctl("policies", "list")
    assert code == Exit.OK
    rows = {line.split()[0]: line for line in plain(out).splitlines()[1:]}
    assert set(rows) == {"per-thread", "daily", "per-agent", "runs", "agent-usage", "model-usage"}
    assert "concurrency 10, run_duration 2h" in rows["runs"]
    assert "calendar day (UTC)" in rows["daily"]
    assert "none (meter)" in rows["model-usage"]
    code, out, _ = ctl("policies", "list", "--json")
    names = [p["name"] for p in json.loads(out)["policies"]]
    assert names == sorted(names) and len(names) == 6


def test_policies_put_from_a_toml_file_then_list_shows_it(
    served: Served, ctl: Run, tmp_path: Path
) -> None:
    path = tmp_path / "team.toml"
    path.write_text(TEAM_TOML)
    code, out, err = ctl("policies", "put", str(path))
    assert (code, err) == (Exit.OK, "")
    assert plain(out) == "created policy team-research\ncreated policy per-user-tpm\n"
    code, out, _ = ctl("policies", "list")
    row = next(line for line in out.splitlines() if line.startswith("team-research"))
    assert "tenant=research" in row and "cost_usd $250.00" in row
    assert "calendar month (Europe/Paris)" in row and "soft" in row
    code, out, _ = ctl("policies", "list", "--json")
    stored = {p["name"]: p for p in json.loads(out)["policies"]}
    team = stored["team-research"]
    assert {"dimension": "DIMENSION_COST_MICRO_USD", "limit": 250_000_000} in team["caps"]
    assert team["window"]["calendar"] == {
        "unit": "CALENDAR_UNIT_MONTH",
        "time_zone": "Europe/Paris",
    }
    assert team["enforcement"] == "ENFORCEMENT_SOFT"
    assert [t["percent"] for t in team["thresholds"]] == [50, 80]
    tpm = stored["per-user-tpm"]
    assert {"dimension": "DIMENSION_RUN_DURATION_MS", "limit": 7_200_000} in tpm["caps"]
    assert tpm["window"]["sliding"]["duration"] == "60s"
    # Putting it again replaces, and --json says so.
    code, out, _ = ctl("policies", "put", str(path), "--json")
    results = json.loads(out)["results"]
    assert [(r["policy"]["name"], r["created"]) for r in results] == [
        ("team-research", False),
        ("per-user-tpm", False),
    ]


def test_put_one_top_level_policy_and_apply_to_existing(
    served: Served, ctl: Run, tmp_path: Path
) -> None:
    consume(served, "c1")
    path = tmp_path / "thread.toml"

    def put(limit: int, *flags: str) -> int:
        caps = f"caps = {{ total_tokens = {limit} }}"
        path.write_text(f'name = "per-thread"\nper = ["thread"]\n{caps}\n')
        return ctl("policies", "put", str(path), *flags)[0]

    def limit() -> int:
        ledger = served.budget.GetLedger(pb.GetLedgerRequest(key=THREAD_KEY)).ledger
        return int(ledger.dimensions[0].limit)

    assert put(5000) == Exit.OK
    assert limit() == 100_000  # existing ledgers keep their caps by default
    assert put(7000, "--apply-to-existing") == Exit.OK
    assert limit() == 7000


def test_a_bad_policy_file_is_exit_5_naming_file_and_key(
    served: Served, ctl: Run, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TEAM_TOML.replace('cost_usd = "250.00"', 'cost_usd = "12.5.0"'))
    code, out, err = ctl("policies", "put", str(bad))
    assert (code, out) == (Exit.INVALID, "")
    assert one_error_line(err) == (
        f"budgetctl: {bad}:policies[0].caps.cost_usd: not a number: '12.5.0'"
    )
    # Validated before anything is sent: the valid second policy was not put either.
    names = [p.name for p in served.admin.ListPolicies(pb.ListPoliciesRequest()).policies]
    assert "per-user-tpm" not in names

    top = tmp_path / "top.toml"
    top.write_text('name = "x"\ncaps = { total_tokens = "lots" }\n')
    code, _, err = ctl("policies", "put", str(top))
    assert code == Exit.INVALID
    assert f"{top}:caps.total_tokens: must be an integer" in one_error_line(err)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x\n', "invalid TOML"),
        ("[[policies]]\nname = 'a'\n[[policies]]\nname = 'a'\n", "policies[1].name: 'a' is"),
        ("policies = []\n", "policies: must be a non-empty array"),
        ("[[policies]]\nname = 'a'\n[server]\nx = 1\n", "server: unknown key next to"),
        ("[[policies]]\nname = 'a'\nwindow = { kind = 'weekly' }\n", "window.kind: must be"),
        ("name = 'a'\nmatch = { Tenant = 'x' }\n", "match.Tenant: label keys match"),
    ],
)
def test_policy_file_errors(ctl: Run, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    code, _, err = ctl("policies", "put", str(path))
    assert code == Exit.INVALID
    assert message in one_error_line(err)


def test_an_unreadable_policy_file_is_a_usage_error(ctl: Run, tmp_path: Path) -> None:
    code, _, err = ctl("policies", "put", str(tmp_path / "missing.toml"))
    assert code == Exit.USAGE
    assert "cannot read" in one_error_line(err)


def test_a_server_bound_is_exit_6_and_says_what_was_already_put(
    make_served: Callable[..., Served], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    served = make_served(limits=Limits(max_policies=6))  # the six defaults fill it
    run = runner(served, capsys)
    path = tmp_path / "two.toml"
    path.write_text(
        "[[policies]]\nname = 'daily'\ncaps = { total_tokens = 5_000_000 }\n"
        "[[policies]]\nname = 'brand-new'\n"
    )
    code, _, err = run("policies", "put", str(path))
    assert code == Exit.EXHAUSTED
    line = one_error_line(err)
    assert "'brand-new'" in line and "max_policies" in line and "already put: daily" in line


def test_policies_get_writes_a_file_that_put_takes_back(
    served: Served, ctl: Run, tmp_path: Path
) -> None:
    (tmp_path / "team.toml").write_text(TEAM_TOML)
    assert ctl("policies", "put", str(tmp_path / "team.toml"))[0] == Exit.OK
    before = served.admin.ListPolicies(pb.ListPoliciesRequest()).policies
    code, out, _ = ctl("policies", "get")
    assert code == Exit.OK
    document = tomllib.loads(plain(out))
    assert len(document["policies"]) == len(before)
    assert 'cost_usd = "250.00"' in out and 'run_duration = "2h"' in out
    # The file reads back to the same policies (here and on the daemon).
    parsed = [Policy.from_mapping(item) for item in document["policies"]]
    assert [p.name for p in parsed] == [p.name for p in before]
    (tmp_path / "all.toml").write_text(out)
    code, out, _ = ctl("policies", "put", str(tmp_path / "all.toml"))
    assert code == Exit.OK and "created" not in out
    assert served.admin.ListPolicies(pb.ListPoliciesRequest()).policies == before
    code, out, _ = ctl("policies", "get", "runs", "--json")
    assert [p["name"] for p in json.loads(out)["policies"]] == ["runs"]
    code, _, err = ctl("policies", "get", "nope")
    assert code == Exit.NOT_FOUND
    assert "policy 'nope' not found" in one_error_line(err)


def test_policies_delete(served: Served, ctl: Run) -> None:
    consume(served, "c1")
    code, out, _ = ctl("policies", "delete", "per-thread")
    assert code == Exit.OK
    assert "deleted policy per-thread; closed 1 ledgers" in plain(out)
    code, out, _ = ctl("policies", "delete", "per-agent", "--json")
    assert json.loads(out) == {"name": "per-agent", "closed_ledgers": 1}
    code, _, err = ctl("policies", "delete", "per-thread")
    assert code == Exit.NOT_FOUND
    assert "per-thread" in one_error_line(err)


# --- reset, runs, snapshot ---------------------------------------------------------------


def test_reset_prints_the_final_totals_and_the_ledger_is_zero_after(
    served: Served, ctl: Run
) -> None:
    consume(served, "c1", tokens=2000, cost_micro_usd=1_250_000)
    consume(served, "c2", tokens=2000, cost_micro_usd=1_250_000)
    code, out, _ = ctl("reset", THREAD_KEY)
    assert code == Exit.OK
    plain(out)
    assert out.startswith(f"reset {THREAD_KEY} (policy per-thread); totals before the reset:")
    assert re.search(r"^  tokens +6,000 \(input 4,000, cached 0, output 2,000\)$", out, re.M)
    assert re.search(r"^  cost +\$2\.50$", out, re.M)
    assert re.search(r"^  requests +2$", out, re.M)
    code, out, _ = ctl("ledger", THREAD_KEY, "--json")
    totals = json.loads(out)["ledger"]["totals"]
    assert totals["total_tokens"] == 0 and totals["requests"] == 0
    consume(served, "c3")
    code, out, _ = ctl("reset", THREAD_KEY, "--json")
    final = json.loads(out)["final"]
    assert final["totals"]["total_tokens"] == 1500
    assert ctl("reset", "per-thread{thread=nope}")[0] == Exit.NOT_FOUND


def test_runs_shows_ledgers_with_open_runs_or_a_concurrency_cap(served: Served, ctl: Run) -> None:
    code, out, _ = ctl("runs")
    assert (code, plain(out)) == (Exit.OK, "no open runs, and no ledger with a concurrency cap\n")
    consume(served, "c1", labels={"agent": "critic", "thread": "t9"})  # creates six ledgers
    code, out, _ = ctl("runs")
    (row,) = plain(out).splitlines()[1:]  # only `runs` has a concurrency cap; no open runs
    assert row.split()[:6] == ["runs", "ok", "0", "0", "/", "10"]
    opened = served.budget.OpenRun(pb.OpenRunRequest(request_id="o1", labels=THREAD, run_id="r1"))
    assert opened.decision == pb.DECISION_ALLOW
    code, out, _ = ctl("runs")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {
        "runs",
        THREAD_KEY,
        "per-agent{agent=writer}",
        "agent-usage{agent=writer}",
        "daily",
    }
    assert rows["runs"][2:6] == ["1", "1", "/", "10"]
    assert rows[THREAD_KEY][2:4] == ["1", "-"]
    code, out, _ = ctl("runs", "--json", "--policy", "runs")
    (ledger,) = json.loads(out)["ledgers"]
    assert ledger["open_runs"] == 1
    assert ledger["dimensions"][0]["dimension"] == "DIMENSION_CONCURRENCY"


def test_snapshot(served: Served, ctl: Run) -> None:
    consume(served, "c1")
    code, out, _ = ctl("snapshot")
    assert code == Exit.OK
    path = re.search(r"^snapshot +(\S+)$", plain(out), re.MULTILINE)
    assert path is not None and Path(path.group(1)).is_file()
    assert re.search(r"^seq +1$", out, re.MULTILINE)
    assert re.search(rf"^taken at +{WHEN}$", out, re.MULTILINE)
    code, out, _ = ctl("snapshot", "--json")
    data = json.loads(out)
    assert data["size_bytes"] == Path(data["path"]).stat().st_size
    assert data["sequence"] == 1


# --- watch ---------------------------------------------------------------------------


def wait_for_subscribers(served: Served, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while served.runtime.events.subscriber_count < count:
        assert time.monotonic() < deadline, "budgetctl watch did not subscribe"
        time.sleep(0.01)


@pytest.fixture
def in_thread() -> Iterator[Callable[[Callable[[], int]], dict[str, int]]]:
    threads: list[threading.Thread] = []

    def start(fn: Callable[[], int]) -> dict[str, int]:
        result: dict[str, int] = {}
        thread = threading.Thread(target=lambda: result.setdefault("code", fn()), daemon=True)
        thread.start()
        threads.append(thread)
        return result

    yield start
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_watch_prints_live_events_while_another_thread_consumes(
    served: Served,
    capsys: pytest.CaptureFixture[str],
    in_thread: Callable[[Callable[[], int]], dict[str, int]],
) -> None:
    result = in_thread(lambda: main(["--target", served.target, "watch", "--count", "3"]))
    wait_for_subscribers(served)
    consume(served, "c1", tokens=40_000, model="gpt-4o")  # 60k
    consume(served, "c2", tokens=10_000)  # 75k: crosses 75 % (warning)
    deadline = time.monotonic() + 10
    while "code" not in result:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    out, err = capsys.readouterr()
    assert (result["code"], err) == (Exit.OK, "")
    lines = plain(out).splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["1", "2027-01-15T08:00:00.000Z", "usage_recorded"]
    assert "60,000 tokens (in 40,000, out 20,000)" in lines[0]
    assert "{agent=writer, model=gpt-4o, thread=t1}" in lines[0]
    assert "threshold_crossed" in lines[1] and "crossed 75% (warning)" in lines[1]
    assert "usage_recorded" in lines[2]


def test_watch_json_is_one_object_per_line(served: Served, ctl: Run) -> None:
    consume(served, "c1")
    served.budget.OpenRun(pb.OpenRunRequest(request_id="o1", labels=THREAD, run_id="r1"))
    code, out, _ = ctl("watch", "--json", "--after-seq", "0", "--count", "2")
    assert code == Exit.OK
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["seq"] == 1 and first["usage_recorded"]["request_id"] == "c1"
    assert first["usage_recorded"]["usage"]["input_tokens"] == 1000
    assert first["at"] == WHEN
    assert second["seq"] == 2 and second["run_opened"] == {"run_id": "r1"}


def test_watch_filters_by_kind_severity_selector_and_seq(served: Served, ctl: Run) -> None:
    consume(served, "c1", tokens=60_000)  # 90k: warning and critical at once
    consume(served, "c2", tokens=1, labels={"agent": "other", "thread": "t2"})
    code, out, _ = ctl(
        "watch", "--after-seq", "0", "--count", "1",
        "--kind", "threshold_crossed", "--min-severity", "critical",
    )  # fmt: skip
    assert code == Exit.OK
    (line,) = plain(out).splitlines()
    assert "crossed 90% (critical)" in line
    code, out, _ = ctl("watch", "--after-seq", "0", "--count", "1", "--selector", "thread=t2")
    (line,) = out.splitlines()
    assert "usage_recorded" in line and "{agent=other, thread=t2}" in line
    code, out, _ = ctl("watch", "--json", "--after-seq", "3", "--count", "1")
    assert json.loads(out)["seq"] == 4  # resumes after seq 3


def test_watch_reports_where_to_resume_when_the_daemon_goes_away(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    in_thread: Callable[[Callable[[], int]], dict[str, int]],
) -> None:
    server = serve(tmp_path)
    served = next(server)
    consume(served, "c1")
    consume(served, "c2")
    result = in_thread(lambda: main(["--target", served.target, "watch", "--after-seq", "0"]))
    wait_for_subscribers(served)
    printed, deadline = "", time.monotonic() + 10
    while printed.count("\n") < 2:  # the two retained events are delivered
        assert time.monotonic() < deadline
        printed += capsys.readouterr().out
        time.sleep(0.01)
    for _ in server:  # stops the server
        pass
    deadline = time.monotonic() + 10
    while "code" not in result:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _, err = capsys.readouterr()
    assert result["code"] == Exit.UNAVAILABLE
    assert [line for line in err.splitlines() if line.startswith("budgetctl:")][-1].endswith(
        "resume with --after-seq 2"
    )


def test_watch_exits_0_on_ctrl_c(served: Served) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "budgetd_client.ctl", "--target", served.target, "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for_subscribers(served)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert (process.returncode, err) == (0, "")
