"""The real `budgetd` process: start, call, reload, signal, kill -9, restart."""

from __future__ import annotations

import queue
import re
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.v1 import budget_pb2 as pb
from tests.e2e.support import REPO, WAIT_S, Daemon, run_budgetd

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
THREAD = {"agent": "writer", "thread": "t1"}

POLICIES = """
[[policies]]
name = "per-user"
per = ["user"]
caps = { total_tokens = 1000 }
"""


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Every daemon a test starts is killed at the end, whatever happened."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(daemons: list[Daemon], home: Path, *args: str) -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(home, args)
    daemons.append(daemon)
    return daemon.start()


def consume(
    request_id: str, tokens: int = 100, labels: dict[str, str] | None = None
) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(
        request_id=request_id,
        labels=labels or THREAD,
        usage=pb.Usage(input_tokens=tokens, model="gpt-4o"),
    )


def test_embedded_defaults_serve_on_the_unix_socket_and_tcp(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    daemon = start(daemons, tmp_path)
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert daemon.health(daemon.unix_target) == SERVING
    assert daemon.health(daemon.tcp_target) == SERVING
    daemon.budget(daemon.unix_target).Consume(consume("c1"))
    # A fresh install: TCP callers need a token (see tests/e2e/test_auth.py).
    with pytest.raises(grpc.RpcError) as refused:
        daemon.budget(daemon.tcp_target).Consume(consume("c2"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ledger = daemon.budget().GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert ledger.totals.requests == 1
    assert ledger.dimensions[0].limit == 100_000  # the embedded per-thread policy
    names = {p.name for p in daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies}
    assert names == {"per-thread", "daily", "per-agent", "runs", "agent-usage", "model-usage"}

    assert daemon.stop() == 0
    assert daemon.wait_for("stopped")
    assert not daemon.socket.exists()


def test_a_config_file_sets_the_policies(daemons: list[Daemon], tmp_path: Path) -> None:
    config = tmp_path / "budgetd.toml"
    config.write_text(POLICIES)
    daemon = start(daemons, tmp_path / "d", "--config", str(config))
    names = [p.name for p in daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies]
    assert names == ["per-user"]


def test_sighup_reloads_policies_and_an_invalid_file_keeps_the_old_ones(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "budgetd.toml"
    config.write_text(POLICIES)
    daemon = start(daemons, tmp_path / "d", "--config", str(config))
    config.write_text(POLICIES.replace("1000", "5000") + '\n[[policies]]\nname = "meter"\n')
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_for("policies reloaded")
    assert (reloaded["added"], reloaded["changed"], reloaded["removed"]) == (
        ["meter"],
        ["per-user"],
        [],
    )
    policies = {p.name: p for p in daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies}
    assert set(policies) == {"per-user", "meter"}
    assert policies["per-user"].caps[0].limit == 5000

    config.write_text('[[policies]]\nname = "Bad Name"\n')
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_for("reload rejected; keeping the current policies")
    assert "policies[0].name" in rejected["error"]
    names = {p.name for p in daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies}
    assert names == {"per-user", "meter"}
    assert daemon.health() == SERVING


def test_a_reload_that_would_drop_every_file_policy_is_refused_unless_asked(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "budgetd.toml"
    config.write_text(POLICIES)
    daemon = start(daemons, tmp_path / "d", "--config", str(config))
    # An emptied file (an editor half-way through writing it) would mean the embedded
    # defaults in place of every policy of the file.
    texts = ("", "# rewritten\n", '[[policies]]\nname = "other"\n')
    for n, text in enumerate(texts, 1):
        config.write_text(text)
        daemon.signal(signal.SIGHUP)
        rejected = daemon.wait_for_nth("reload rejected; keeping the current policies", n)
        assert "would remove every policy the file wrote (1: per-user)" in rejected["error"]
        assert "reload_may_replace_all = true" in rejected["error"]
        names = [p.name for p in daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies]
        assert names == ["per-user"]
    config.write_text('reload_may_replace_all = true\n[[policies]]\nname = "other"\n')
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_for("policies reloaded")
    assert (reloaded["added"], reloaded["removed"]) == (["other"], ["per-user"])


def test_the_reload_guard_counts_only_the_policies_the_file_writes(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    """Embedded defaults are not the file's own: a file that used them may turn into one
    with policies of its own, and one that added its own beside them may not lose all
    of those to an emptied file."""
    config = tmp_path / "budgetd.toml"
    config.write_text("# the embedded defaults\n")
    daemon = start(daemons, tmp_path / "d", "--config", str(config))
    config.write_text(POLICIES)
    daemon.signal(signal.SIGHUP)
    assert "per-user" in daemon.wait_for("policies reloaded")["added"]
    config.write_text("embedded_policies = true\n" + POLICIES)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_nth("policies reloaded", 2)
    config.write_text("")  # the embedded defaults again: per-user would go
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_for("reload rejected; keeping the current policies")
    assert "would remove every policy the file wrote (1: per-user)" in rejected["error"]
    names = {p.name for p in daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies}
    assert "per-user" in names and len(names) > 1


def test_the_timer_expires_holds_with_the_real_clock(daemons: list[Daemon], tmp_path: Path) -> None:
    daemon = start(daemons, tmp_path, "--tick", "0.05")
    budget = daemon.budget()
    held = budget.Reserve(
        pb.ReserveRequest(
            request_id="r1",
            labels=THREAD,
            estimate=pb.Usage(input_tokens=500),
            ttl=Duration(nanos=200_000_000),
        )
    )
    assert held.reservation_id
    expired = daemon.wait_for("expired")  # the timer's summary line for its tick
    assert expired["reservations"] == 1
    ledger = budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert ledger.dimensions[0].reserved == 0


def test_sigterm_drains_reports_not_serving_and_exits_zero(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    # A grace longer than the support's wait: the daemon must not need it, because an
    # open health watch ends once it has reported NOT_SERVING instead of holding the drain.
    daemon = start(daemons, tmp_path, "--grace", "300")
    watch = health_pb2_grpc.HealthStub(daemon.channel()).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S
    )
    assert next(watch).status == SERVING
    daemon.signal(signal.SIGTERM)
    assert rest_of(watch) == [NOT_SERVING]  # and then the watch ended
    assert daemon.wait() == 0
    assert daemon.wait_for("stopped")


def rest_of(watch: Iterator[health_pb2.HealthCheckResponse]) -> list[int]:
    """The statuses a watch reports until it ends. The daemon may exit before the end
    of the stream reaches the client (a broken pipe, UNAVAILABLE): after the last
    status that is also an end, and the only one a stopped process can give."""
    statuses = []
    try:
        for message in watch:
            statuses.append(message.status)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    return statuses


def test_every_drain_is_reported_to_an_open_watch_across_many_restarts(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    # The race on purpose: SIGTERM right after the watch has its first answer, again
    # and again. Each cycle must report NOT_SERVING and end the watch, never end on
    # SERVING (which a load balancer would read as "still up").
    for cycle in range(12):
        daemon = start(daemons, tmp_path / f"c{cycle}", "--grace", "300")
        watch = health_pb2_grpc.HealthStub(daemon.channel()).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S
        )
        assert next(watch).status == SERVING
        daemon.signal(signal.SIGTERM)
        assert rest_of(watch) == [NOT_SERVING], f"cycle {cycle}"
        assert daemon.wait() == 0


def test_sigint_also_stops_cleanly(daemons: list[Daemon], tmp_path: Path) -> None:
    daemon = start(daemons, tmp_path)
    daemon.signal(signal.SIGINT)
    assert daemon.wait() == 0


def test_in_flight_stream_holds_the_drain_and_a_second_signal_exits_at_once(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    daemon = start(daemons, tmp_path, "--grace", "120")
    gate: queue.Queue[pb.ConsumeStreamRequest | None] = queue.Queue()

    def held_open() -> Iterator[pb.ConsumeStreamRequest]:
        while (item := gate.get()) is not None:
            yield item

    stream = daemon.budget().ConsumeStream(held_open())
    gate.put(pb.ConsumeStreamRequest(sequence=1, request=consume("s1")))
    assert next(stream).sequence == 1
    daemon.signal(signal.SIGTERM)
    daemon.wait_for("draining")
    with pytest.raises(subprocess.TimeoutExpired):  # the open stream holds the drain
        daemon.process.wait(timeout=1)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 1
    assert daemon.wait_for("second signal: exiting without draining")
    gate.put(None)
    with pytest.raises(grpc.RpcError):
        list(stream)


def test_kill_9_leaves_a_stale_socket_that_the_next_start_replaces(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    first = start(daemons, tmp_path)
    first.budget().Consume(consume("c1"))
    first.kill()  # SIGKILL: no cleanup
    assert first.socket.exists()
    second = start(daemons, tmp_path)
    assert second.wait_for("stale socket replaced")["path"] == str(second.socket)
    assert second.health() == SERVING


def test_a_live_daemon_on_the_socket_is_refused(daemons: list[Daemon], tmp_path: Path) -> None:
    first = start(daemons, tmp_path)
    refused = run_budgetd(
        "--socket", str(first.socket), "--no-tcp", "--state-dir", str(tmp_path / "s2")
    )
    assert refused.returncode == 1
    assert "another budgetd is running on" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert first.health() == SERVING


def test_uvloop_and_plain_asyncio_both_serve(daemons: list[Daemon], tmp_path: Path) -> None:
    for loop in ("uvloop", "asyncio"):
        daemon = start(daemons, tmp_path / loop, "--loop", loop)
        assert daemon.ready["loop"] == loop
        daemon.budget().Consume(consume(f"c-{loop}"))
        assert daemon.health() == SERVING
        assert daemon.stop() == 0


def test_oversize_and_malformed_requests_change_nothing(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    daemon = start(daemons, tmp_path)
    budget = daemon.budget()
    with pytest.raises(grpc.RpcError) as raised:
        budget.Consume(consume("big", labels={"k": "v" * 70_000}))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as raised:
        budget.Consume(consume("bad", labels={"BAD KEY": "v"}))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "labels['BAD KEY']" in (raised.value.details() or "")
    assert list(budget.ListLedgers(pb.ListLedgersRequest()).ledgers) == []
    assert daemon.health() == SERVING


# --- configuration errors and check-config -------------------------------------------


def test_an_invalid_config_fails_start_with_exit_2_and_file_key_reason(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\ngrace_seconds = -1\n")
    done = run_budgetd("--config", str(config), "--socket", str(tmp_path / "s.sock"))
    assert done.returncode == 2
    assert f"{config}:server.grace_seconds:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_non_loopback_address_needs_the_flag(tmp_path: Path) -> None:
    done = run_budgetd("--tcp", "0.0.0.0:0", "--socket", str(tmp_path / "s.sock"))
    assert done.returncode == 2
    assert "allow-non-loopback" in done.stderr


def test_check_config_prints_the_effective_policies(tmp_path: Path) -> None:
    done = run_budgetd("check-config", str(REPO / "examples" / "budgetd.toml"))
    assert done.returncode == 0, done.stderr
    for name in ("per-thread", "daily", "per-agent", "runs", "agent-usage", "model-usage"):
        assert name in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[policies]]\nname = "p"\ncaps = { tokens = 5 }\n')
    failed = run_budgetd("check-config", str(bad))
    assert failed.returncode == 2
    assert f"{bad}:policies[0].caps.tokens:" in failed.stderr


def test_env_overrides_the_file_and_flags_override_env(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "budgetd.toml"
    config.write_text('[server]\nlog_level = "error"\n')
    home = tmp_path / "d"
    home.mkdir()
    daemon = Daemon(
        home,
        ["--config", str(config), "--log-level", "info"],
        env={"BUDGETD_LOG_LEVEL": "warning"},
    )
    daemons.append(daemon)
    daemon.start()  # "ready" is an info line: logged only because the flag won
    assert daemon.health() == SERVING


def test_env_overrides_the_file(daemons: list[Daemon], tmp_path: Path) -> None:
    config = tmp_path / "budgetd.toml"
    config.write_text('[server]\nlog_level = "error"\n')
    home = tmp_path / "d"
    home.mkdir()
    daemon = Daemon(home, ["--config", str(config)], env={"BUDGETD_LOG_LEVEL": "info"})
    daemons.append(daemon)
    daemon.start()  # "ready" is an info line: logged only because the env won
    assert daemon.health() == SERVING


def test_the_default_socket_is_in_xdg_runtime_dir(daemons: list[Daemon], tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    daemon = Daemon(
        tmp_path, env={"XDG_RUNTIME_DIR": str(runtime)}, socket=runtime / "budgetd.sock"
    )
    daemons.append(daemon)
    daemon.start()
    assert daemon.ready["unix"] == str(runtime / "budgetd.sock")
    assert daemon.health() == SERVING


def test_the_loop_is_the_one_asked_for(daemons: list[Daemon], tmp_path: Path) -> None:
    assert start(daemons, tmp_path / "u", "--loop", "uvloop").ready["loop"] == "uvloop"
    assert start(daemons, tmp_path / "a", "--loop", "asyncio").ready["loop"] == "asyncio"


def test_max_message_bytes_is_applied(daemons: list[Daemon], tmp_path: Path) -> None:
    daemon = start(daemons, tmp_path, "--max-message-bytes", "2048")
    budget = daemon.budget()
    budget.Consume(consume("small"))
    with pytest.raises(grpc.RpcError) as raised:
        budget.Consume(consume("big", labels={"k": "v" * 3000}))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_reload_applies_to_existing_ledgers_and_keeps_start_flags(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    config = tmp_path / "budgetd.toml"
    config.write_text('[server]\ntcp = "0.0.0.0:0"\n' + POLICIES)
    daemon = start(daemons, tmp_path / "d", "--config", str(config), "--allow-non-loopback")
    budget = daemon.budget()
    budget.Consume(consume("c1", tokens=900, labels={"user": "ann"}))
    denied = budget.Check(
        pb.CheckRequest(labels={"user": "ann"}, estimate=pb.Usage(input_tokens=500))
    )
    assert denied.decision == pb.DECISION_DENY
    config.write_text('[server]\ntcp = "0.0.0.0:0"\n' + POLICIES.replace("1000", "5000"))
    daemon.signal(signal.SIGHUP)
    assert daemon.wait_for("policies reloaded")["changed"] == ["per-user"]
    ledger = budget.GetLedger(pb.GetLedgerRequest(key="per-user{user=ann}")).ledger
    assert ledger.dimensions[0].limit == 5000
    assert ledger.totals.total_tokens == 900  # the ledger kept counting
    allowed = budget.Check(
        pb.CheckRequest(labels={"user": "ann"}, estimate=pb.Usage(input_tokens=500))
    )
    assert allowed.decision != pb.DECISION_DENY


def test_a_second_daemon_is_refused_while_the_first_drains(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    first = start(daemons, tmp_path, "--grace", "120")
    gate: queue.Queue[pb.ConsumeStreamRequest | None] = queue.Queue()

    def held_open() -> Iterator[pb.ConsumeStreamRequest]:
        while (item := gate.get()) is not None:
            yield item

    stream = first.budget().ConsumeStream(held_open())
    gate.put(pb.ConsumeStreamRequest(sequence=1, request=consume("s1")))
    assert next(stream).sequence == 1
    first.signal(signal.SIGTERM)
    first.wait_for("draining")
    second = run_budgetd(
        "--socket", str(first.socket), "--no-tcp", "--state-dir", str(tmp_path / "s2")
    )
    assert second.returncode == 1
    assert "another budgetd is running on" in second.stderr
    gate.put(None)
    list(stream)  # the stream ends: the first daemon finishes its drain
    assert first.wait() == 0
    assert not first.socket.exists()


def test_subscribers_are_told_to_resume_when_the_daemon_drains(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    daemon = start(daemons, tmp_path)
    daemon.budget().Consume(consume("c1"))
    events = daemon.budget().Subscribe(pb.SubscribeRequest(after_seq=0))
    assert next(events).event.seq == 1
    daemon.signal(signal.SIGTERM)
    with pytest.raises(grpc.RpcError) as raised:
        list(events)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "resume with after_seq=1" in (raised.value.details() or "")
    assert daemon.wait() == 0


def test_an_unusable_socket_directory_is_a_clear_start_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run_budgetd("--socket", str(blocker / "s.sock"), "--no-tcp")
    assert done.returncode == 1
    assert "cannot start" in done.stderr
    assert "Traceback" not in done.stderr


def test_debug_logs_one_line_per_call_and_no_library_chatter(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    daemon = start(daemons, tmp_path, "--log-level", "debug")
    budget = daemon.budget()
    budget.Consume(consume("c1"))
    with pytest.raises(grpc.RpcError):
        budget.Consume(pb.ConsumeRequest(request_id="bad", labels={"BAD KEY": "x"}))
    watch = health_pb2_grpc.HealthStub(daemon.channel()).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S
    )
    assert next(watch).status == SERVING
    daemon.signal(signal.SIGTERM)
    assert rest_of(watch) == [NOT_SERVING]
    assert daemon.wait() == 0
    calls = [r for r in daemon.lines if r.get("event") == "call"]
    by_id = {r["request_id"]: r for r in calls}
    assert by_id["c1"]["method"] == "/budgetd.v1.BudgetService/Consume"
    assert by_id["c1"]["status"] == "OK" and by_id["c1"]["ms"] >= 0
    assert by_id["bad"]["status"] == "INVALID_ARGUMENT"
    assert any(r["method"] == "/grpc.health.v1.Health/Watch" for r in calls)
    # Every line is budgetd's own (asyncio's and gRPC's debug chatter stays off).
    assert all(r.get("event") != "unparsed" for r in daemon.lines), daemon.log_text()
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", r["ts"]) for r in daemon.lines
    )
