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
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from budgetd import paths
from budgetd.core import Limits, Policy
from budgetd.v1 import budget_pb2 as pb
from budgetd_client.ctl import Exit, cli, commands, main, operator
from budgetd_client.ctl.errors import from_rpc
from tests.service.support import START, Served, serve

assert START == 1_800_000_000.0  # WHEN below is this instant

ANSI = re.compile(r"\x1b\[")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # the colour codes rich writes
README = Path(__file__).resolve().parents[2] / "README.md"
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
    run_id: str = "",
    **usage: Any,
) -> None:
    served.budget.Consume(
        pb.ConsumeRequest(
            request_id=request_id,
            labels=labels or THREAD,
            usage=pb.Usage(input_tokens=tokens, output_tokens=tokens // 2, **usage),
            run_id=run_id,
        )
    )


def plain(text: str) -> str:
    assert not ANSI.search(text), f"escape codes in plain output: {text!r}"
    return text


def uncoloured(text: str) -> str:
    text = SGR.sub("", text)
    assert "\x1b" not in text, f"escape codes other than colours: {text!r}"
    return text


POLL_TRIES = 2000
POLL_PAUSE = 0.005  # 2000 tries of 5 ms: about 10 s on an idle machine


def poll(done: Callable[[], bool], what: str, tries: int = POLL_TRIES) -> None:
    """Ask `done()` at most `tries` times with a short pause between (no clock is read);
    fail with a message naming `what` if it never became true."""
    for _ in range(tries):
        if done():
            return
        time.sleep(POLL_PAUSE)
    pytest.fail(f"still waiting, after {tries} tries, for: {what}")


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
    for command in (
        "status",
        "ledger",
        "policies",
        "reset",
        "runs",
        "limits",
        "info",
        "snapshot",
        "watch",
    ):
        assert command in out
    assert documented_codes(out) == {int(code) for code in Exit}
    assert "daemon unavailable" in out and "not found" in out and "not allowed" in out
    # --json: what is always there, and what is there only when set.
    words = " ".join(out.split())
    assert "every field is present" not in words
    assert "Fields without presence are always there" in words
    assert "window_end is absent for a lifetime window" in words
    assert main(["runs", "--help"]) == Exit.OK
    assert "open runs" in capsys.readouterr().out


def documented_codes(text: str) -> set[int]:
    """The exit codes an `exit codes:` list documents (`  3    daemon unavailable ...`)."""
    return {int(code) for code in re.findall(r"^  (\d+) +\S", text, re.MULTILINE)}


def readme_section(title: str) -> str:
    """One `## ` section of README.md, from its heading to the next one."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_the_readme_documents_the_same_exit_codes_and_json_rules() -> None:
    section = readme_section("budgetctl")
    table = section[section.index("### Exit codes") :]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", table, re.MULTILINE)
    assert {int(code) for code, _ in rows} == {int(code) for code in Exit}
    assert {int(code) for code in re.findall(r"^  (\d+) ", cli.EXIT_CODES, re.M)} == {
        int(code) for code in Exit
    }
    json_rules = section[section.index("### --json") : section.index("### Exit codes")]
    assert "every field is present" not in json_rules
    for omitted in ("`window_end`", "first_use", "`usage.cost_micro_usd`", "oneof"):
        assert omitted in json_rules, omitted


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


LONG_LABELS = {"agent": "writer-agent-with-a-long-name", "thread": "7f3a9c0e-5b1d-4e2f-9a8b-01234"}
LONG_KEY = "per-thread{thread=7f3a9c0e-5b1d-4e2f-9a8b-01234}"  # 48 of the terminal's 60
LONG_AGENT = "per-agent{agent=writer-agent-with-a-long-name}"


@pytest.mark.parametrize("argv", [["status"], ["runs"], ["ledger", LONG_KEY]])
def test_a_narrow_terminal_gets_records_instead_of_a_wrapped_table(
    served: Served, ctl: Run, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """At 60 columns a table that does not fit becomes one `HEADER  value` block per row:
    no line wraps, and identifiers (keys, run ids) stay whole on their line for copying."""
    consume(served, "c1", labels=LONG_LABELS)
    served.budget.OpenRun(pb.OpenRunRequest(request_id="o1", labels=LONG_LABELS, run_id="r1"))
    monkeypatch.setenv("COLUMNS", "200")
    code, wide, _ = ctl("--color", "always", *argv)
    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = ctl("--color", "always", *argv)
    assert code == Exit.OK
    lines = uncoloured(out).splitlines()
    identifier = "r1" if argv == ["runs"] else LONG_KEY
    # Only a line holding a whole identifier may be longer: it is never broken.
    assert all(len(line.rstrip()) <= 60 or identifier in line for line in lines), out
    assert any(line.split()[-1:] == [identifier] for line in lines), out
    if argv != ["ledger", LONG_KEY]:  # a table on a wide terminal, records on a narrow one
        header = "RUN" if argv == ["runs"] else "LEDGER"
        assert any(
            line.split()[:2] == [header, "STATE" if header == "LEDGER" else "LABELS"]
            for line in uncoloured(wide).splitlines()
        ), wide
        assert any(line.split()[:1] == [header] and len(line.split()) == 2 for line in lines)


def test_policy_names_are_never_wrapped_on_a_narrow_terminal(
    ctl: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = "research-team-monthly-spend-with-a-long-policy-name"
    path = tmp_path / "long.toml"
    path.write_text(f'name = "{name}"\ncaps = {{ total_tokens = 1_000 }}\n')
    assert ctl("policies", "put", str(path))[0] == Exit.OK
    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = ctl("--color", "always", "policies", "list")
    assert code == Exit.OK
    assert any(line.split() == ["NAME", name] for line in uncoloured(out).splitlines()), out


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
    assert row.split() == ["total_tokens", "3,000", "700", "100,000", "96,300", "3%", "-"]
    assert re.search(r"cost +\$12\.5\d*$", out, re.MULTILINE)  # USD, the gpt-4o call priced
    assert "400.0ms (2 timed requests)" in out  # average latency
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


def assert_presence(data: dict[str, Any], message: Message, where: str = "") -> None:
    """`data` (budgetctl's JSON of `message`) follows the documented rule: a field
    without presence is always there; a field with presence only when it is set."""
    for field in message.DESCRIPTOR.fields:
        name = f"{where}.{field.name}".lstrip(".")
        if field.has_presence:  # message fields, `optional` scalars, oneof members
            assert (field.name in data) == message.HasField(field.name), name
        else:  # plain scalars, enums, lists and maps
            assert field.name in data, f"{name} is missing"
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.name not in data:
            continue
        kind = field.message_type
        assert kind is not None
        if kind.GetOptions().map_entry or kind.full_name.startswith("google.protobuf."):
            continue  # a map's values and the well-known types are not messages in JSON
        value = getattr(message, field.name)
        if field.is_repeated:
            for i, (item, sub) in enumerate(zip(data[field.name], value, strict=True)):
                assert_presence(item, sub, f"{name}[{i}]")
        else:
            assert_presence(data[field.name], value, name)


def test_json_keeps_fields_without_presence_and_omits_unset_ones(served: Served, ctl: Run) -> None:
    consume(served, "c1")  # no cost: the caller left usage.cost_micro_usd unset
    consume(served, "c2", cost_micro_usd=0)  # set, to 0: free
    served.admin.ResetLedger(pb.ResetLedgerRequest(request_id="x1", key=THREAD_KEY))
    code, out, _ = ctl("status", "--json")
    assert code == Exit.OK
    for ledger in json.loads(out)["ledgers"]:
        stored = served.budget.GetLedger(pb.GetLedgerRequest(key=ledger["key"])).ledger
        assert_presence(ledger, stored, ledger["key"])
    # What the README names: no window_end for a lifetime window, no first_use before
    # the first usage, but every plain number, even 0.
    reset = json.loads(ctl("ledger", THREAD_KEY, "--json")[1])["ledger"]
    assert "window_end" not in reset and "first_use" not in reset["totals"]
    assert reset["totals"]["requests"] == 0 and reset["open_runs"] == 0
    daily = json.loads(ctl("ledger", "daily", "--json")[1])["ledger"]
    assert "window_end" in daily and "first_use" in daily["totals"]

    code, out, _ = ctl("policies", "list", "--json")
    stored_policies = served.admin.ListPolicies(pb.ListPoliciesRequest())
    assert_presence(json.loads(out), stored_policies)

    code, out, _ = ctl("watch", "--json", "--after-seq", "0", "--count", "2")
    assert code == Exit.OK
    stream = served.budget.Subscribe(pb.SubscribeRequest(after_seq=0))
    try:
        events = [next(stream).event for _ in range(2)]
    finally:
        stream.cancel()
    printed = [json.loads(line) for line in out.splitlines()]
    for data, event in zip(printed, events, strict=True):
        assert_presence(data, event, f"event {event.seq}")
    unpriced, free = (data["usage_recorded"]["usage"] for data in printed)
    assert "cost_micro_usd" not in unpriced and free["cost_micro_usd"] == 0


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


def test_the_target_is_normalised_by_budgetd_paths(
    served: Served, ctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI and the SDK read a target the same way: through `paths.as_target`."""
    seen: list[str] = []

    def as_target(value: str) -> str:
        seen.append(value)
        return paths.as_target(value)

    monkeypatch.setattr(cli, "as_target", as_target)
    code, _, _ = ctl("--target", str(served.socket), "snapshot")
    assert code == Exit.OK
    assert seen == [str(served.socket)]


def test_a_bare_socket_path_in_budgetd_target(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BUDGETD_TARGET", str(served.socket))
    assert main(["snapshot", "--json"]) == Exit.OK
    assert json.loads(capsys.readouterr().out)["path"]


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


# Every gRPC status: its exit code and words of its message (details "why").
STATUS_EXITS: dict[grpc.StatusCode, tuple[Exit, str]] = {
    grpc.StatusCode.OK: (Exit.ERROR, "ok: why"),
    grpc.StatusCode.CANCELLED: (Exit.UNAVAILABLE, "the daemon at t cancelled the call: why"),
    grpc.StatusCode.UNKNOWN: (Exit.ERROR, "unknown: why"),
    grpc.StatusCode.INVALID_ARGUMENT: (Exit.INVALID, "invalid argument: why"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (Exit.UNAVAILABLE, "no answer from t within 2s"),
    grpc.StatusCode.NOT_FOUND: (Exit.NOT_FOUND, "why"),
    grpc.StatusCode.ALREADY_EXISTS: (Exit.EXHAUSTED, "why"),
    grpc.StatusCode.PERMISSION_DENIED: (Exit.NOT_ALLOWED, "permission denied: why"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (Exit.EXHAUSTED, "why"),
    grpc.StatusCode.FAILED_PRECONDITION: (Exit.EXHAUSTED, "failed precondition: why"),
    grpc.StatusCode.ABORTED: (Exit.EXHAUSTED, "aborted: why"),
    grpc.StatusCode.OUT_OF_RANGE: (Exit.INVALID, "out of range: why"),
    grpc.StatusCode.UNIMPLEMENTED: (Exit.UNSUPPORTED, "t does not implement this call"),
    grpc.StatusCode.INTERNAL: (Exit.ERROR, "internal: why"),
    grpc.StatusCode.UNAVAILABLE: (Exit.UNAVAILABLE, "daemon unavailable at t: why"),
    grpc.StatusCode.DATA_LOSS: (Exit.ERROR, "data loss: why"),
    grpc.StatusCode.UNAUTHENTICATED: (Exit.NOT_ALLOWED, "unauthenticated: why"),
}
# Exit 1 is for what nobody but a developer can act on; every other status has a code.
UNEXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
}


def test_the_status_table_covers_every_grpc_status() -> None:
    assert set(STATUS_EXITS) == set(grpc.StatusCode)
    assert {code for code, (exit_code, _) in STATUS_EXITS.items() if exit_code == 1} == UNEXPECTED


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_every_status_maps_to_a_documented_exit_code(code: grpc.StatusCode) -> None:
    exit_code, words = STATUS_EXITS[code]
    error = from_rpc(FakeCall(code, "why\nwith a second line"), "t", 2.0)
    assert error.code == exit_code
    assert words in error.message
    assert "\n" not in error.message
    assert int(error.code) in documented_codes(cli.EXIT_CODES)
    section = readme_section("budgetctl")
    assert f"\n| {int(error.code)} | " in section[section.index("### Exit codes") :]


def test_a_refused_permission_exits_7_end_to_end(
    served: Served, ctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_: commands.Ctl) -> int:
        raise FakeCall(grpc.StatusCode.PERMISSION_DENIED, "operators only")

    monkeypatch.setattr(commands, "snapshot", refuse)
    code, _, err = ctl("snapshot")
    assert code == Exit.NOT_ALLOWED and int(Exit.NOT_ALLOWED) == 7
    assert one_error_line(err) == "budgetctl: permission denied: operators only"


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


def test_runs_json_keeps_the_page_token_when_the_list_was_cut(
    served: Served, ctl: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    for run_id in ("r1", "r2", "r3"):
        served.budget.OpenRun(pb.OpenRunRequest(request_id=run_id, labels=THREAD, run_id=run_id))
    code, out, err = ctl("runs", "--json")
    assert (code, err) == (Exit.OK, "")
    assert json.loads(out)["next_page_token"] == ""  # present, and empty: the whole list
    monkeypatch.setattr(operator, "PAGE_SIZE", 1)
    monkeypatch.setattr(operator, "MAX_PAGES", 2)
    code, out, err = ctl("runs", "--json")
    assert code == Exit.OK
    data = json.loads(out)
    assert [run["run_id"] for run in data["runs"]] == ["r1", "r2"]
    assert data["next_page_token"], "a script must be able to tell the list was cut"
    assert "stopped after 2 pages" in one_error_line(err)


def test_runs_lists_open_runs_with_their_usage(served: Served, ctl: Run) -> None:
    code, out, _ = ctl("runs")
    assert (code, plain(out)) == (Exit.OK, "no open runs\n")
    served.budget.OpenRun(pb.OpenRunRequest(request_id="o1", labels=THREAD, run_id="r1"))
    served.budget.OpenRun(
        pb.OpenRunRequest(request_id="o2", labels={"agent": "critic"}, run_id="r2")
    )
    consume(served, "c1", run_id="r1")
    code, out, _ = ctl("runs")
    rows = {line.split()[0]: line.split() for line in plain(out).splitlines()[1:]}
    assert set(rows) == {"r1", "r2"}
    assert "agent=writer," in rows["r1"] and "1,500" in rows["r1"]
    code, out, _ = ctl("runs", "--json", "--selector", "agent=critic")
    (run,) = json.loads(out)["runs"]
    assert run["run_id"] == "r2" and run["labels"] == {"agent": "critic"}
    assert {"opened_at", "last_heartbeat", "expires_at", "deadline"} <= set(run)


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
    poll(
        lambda: served.runtime.events.subscriber_count >= count,
        f"{count} subscriber(s) to the event stream (budgetctl watch subscribing)",
    )


def wait_for_exit(result: dict[str, int]) -> int:
    """The exit code of a `main` run by `in_thread`, once it has returned."""
    poll(lambda: "code" in result, "budgetctl (in a thread) to return")
    return result["code"]


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
    code = wait_for_exit(result)
    out, err = capsys.readouterr()
    assert (code, err) == (Exit.OK, "")
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
    printed: list[str] = []

    def both_printed() -> bool:
        printed.append(capsys.readouterr().out)
        return "".join(printed).count("\n") >= 2

    poll(both_printed, "the two retained events to be printed")
    for _ in server:  # stops the server
        pass
    code = wait_for_exit(result)
    _, err = capsys.readouterr()
    assert code == Exit.UNAVAILABLE
    assert [line for line in err.splitlines() if line.startswith("budgetctl:")][-1].endswith(
        "resume with --after-seq 2"
    )


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_watch_exits_0_on_ctrl_c(served: Served, inherited: str) -> None:
    # "ignored": how a shell starts a background job (`budgetctl watch &`), and how this
    # test's own process may have been started (`make test &`).
    handler = signal.SIG_IGN if inherited == "ignored" else signal.SIG_DFL
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "budgetd_client.ctl", "--target", served.target, "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, handler),  # noqa: PLW1509
    )
    try:
        wait_for_subscribers(served)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert (process.returncode, err) == (0, "")


# --- info, limits, policies diff, --target ---------------------------------------------


def test_info_describes_the_daemon(served: Served, ctl: Run) -> None:
    consume(served, "c1")
    code, out, _ = ctl("info")
    assert code == Exit.OK
    rows = {line.split()[0]: line.split()[1:] for line in plain(out).splitlines()}
    assert rows["version"][0] == "budgetd" and rows["durability"] == ["journal"]
    assert rows["ledgers"] == [f"{served.runtime.engine.ledger_count:,}"]
    assert rows["listeners"] == [] or rows["core"]
    # The idempotency window: how far back a retry is still recognised, and its bounds.
    retries = next(line for line in plain(out).splitlines() if line.startswith("retries"))
    assert retries.split(None, 2)[2] == "for 0s back (at most 24h; 1 of 1,000,000 ids)"
    assert "label text" in plain(out)
    assert "global policies off (no [global] redis_url)" in " ".join(plain(out).split())
    code, out, _ = ctl("info", "--json")
    info = json.loads(out)
    assert info["durability"] == "journal" and info["ledgers"] == served.runtime.engine.ledger_count
    assert info["journal_lsn"] >= 1


def test_limits_override_and_clear_a_ledgers_caps(served: Served, ctl: Run) -> None:
    consume(served, "c1")
    code, out, _ = ctl(
        "limits",
        THREAD_KEY,
        "--total-tokens",
        "5_000",
        "--cost-usd",
        "1.50",
        "--run-duration",
        "90m",
    )
    assert code == Exit.OK, out
    assert f"{THREAD_KEY}: caps overridden" in out
    status = served.budget.GetLedger(pb.GetLedgerRequest(key=THREAD_KEY)).ledger
    limits = {d.dimension: d.limit for d in status.dimensions}
    assert limits == {
        pb.DIMENSION_TOTAL_TOKENS: 5000,
        pb.DIMENSION_COST_MICRO_USD: 1_500_000,
        pb.DIMENSION_RUN_DURATION_MS: 5_400_000,
    }
    code, out, _ = ctl("limits", THREAD_KEY, "--clear", "--json")
    assert code == Exit.OK
    caps = {d["dimension"]: d["limit"] for d in json.loads(out)["ledger"]["dimensions"]}
    assert caps == {"DIMENSION_TOTAL_TOKENS": 100_000}  # the policy's cap again
    assert ctl("limits", THREAD_KEY)[0] == Exit.USAGE  # neither caps nor --clear
    code, _, err = ctl("limits", THREAD_KEY, "--cost-usd", "1.2345678")
    assert code == Exit.USAGE and "--cost-usd" in err
    assert ctl("limits", "nope{x=1}", "--requests", "3")[0] == Exit.NOT_FOUND


def test_policies_diff_shows_what_a_put_and_a_reload_would_change(
    served: Served, ctl: Run, tmp_path: Path
) -> None:
    path = tmp_path / "team.toml"
    _, unchanged, _ = ctl("policies", "get", "agent-usage")  # as the daemon has it
    path.write_text(
        '[[policies]]\nname = "per-thread"\nper = ["thread"]\n'
        "caps = { total_tokens = 250_000 }\n\n"
        '[[policies]]\nname = "team"\nper = ["user"]\ncaps = { requests = 10 }\n\n' + unchanged
    )
    before = served.admin.ListPolicies(pb.ListPoliciesRequest())
    code, out, _ = ctl("policies", "diff", str(path), "--json")
    assert code == Exit.OK, out
    diff = json.loads(out)
    assert diff["added"] == ["team"] and diff["changed"] == ["per-thread"]
    assert diff["unchanged"] == ["agent-usage"]
    assert "daily" in diff["removed_by_reload"] and "per-thread" not in diff["removed_by_reload"]
    code, out, _ = ctl("policies", "diff", str(path))
    lines = plain(out).splitlines()
    assert "+ team (new)" in lines and "~ per-thread (changed)" in lines
    assert any("total_tokens = 250000" in line or "250_000" in line for line in lines), out
    assert served.admin.ListPolicies(pb.ListPoliciesRequest()) == before  # nothing applied


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("myhost", "myhost:50051"),
        ("10.0.0.7", "10.0.0.7:50051"),
        ("[::1]", "[::1]:50051"),
        ("myhost:7000", "myhost:7000"),
        ("[::1]:7000", "[::1]:7000"),
        ("/run/budgetd.sock", "unix:/run/budgetd.sock"),
        ("unix:/run/budgetd.sock", "unix:/run/budgetd.sock"),
    ],
)
def test_a_target_without_a_port_means_budgetds_port(given: str, meant: str) -> None:
    assert cli._target(given) == meant


def test_a_url_as_target_is_a_usage_error_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", "http://localhost:50051", "info"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert "not a URL" in err and "--target localhost:50051" in err


def test_status_and_ledger_show_unpriced_usage_next_to_the_cost_cap_and_when_it_comes_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spend = Policy.from_mapping(
        {"name": "spend", "per": ["user"], "caps": {"cost_usd": "5"}, "window": "calendar"}
    )
    for served in serve(tmp_path, policies=(spend,)):
        run = runner(served, capsys)
        for i, model in enumerate(("gpt-4o", "no-such-model-7", "no-such-model-7")):
            served.budget.Consume(
                pb.ConsumeRequest(
                    request_id=f"c{i}",
                    labels={"user": "u"},
                    usage=pb.Usage(input_tokens=1000, model=model),
                )
            )
        code, out, _ = run("status")
        assert code == Exit.OK
        row = next(line for line in plain(out).splitlines() if "cost_usd" in line)
        assert "(+2 unpriced)" in row, out
        code, out, _ = run("ledger", "spend{user=u}")
        text = plain(out)
        row = next(line for line in text.splitlines() if line.startswith("cost_usd"))
        assert "(+2 unpriced)" in row and row.split()[-1] == "2027-01-16T00:00:00Z", row
        assert "(+2 unpriced, 2,000 tokens)" in text
