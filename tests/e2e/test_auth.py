"""Who may call the real daemon: another Unix user, bearer tokens, TLS and mTLS.

Another user is a client process that becomes uid 65534 (nobody) before it connects
(`tests/e2e/as_user.py`); that needs root, which CI has. Its socket lives in a directory
every user can traverse, so only the socket's own mode and the daemon decide.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd.v1 import budget_pb2 as pb
from budgetd.v1 import budget_pb2_grpc as rpc
from tests.auth_support import Authority, Pem, bearer, token_file
from tests.e2e.support import REPO, WAIT_S, Daemon

NOBODY = 65534
READER_UID = 65533  # no such user needs to exist: the kernel reports what the process has
STRANGER_UID = 65532
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="becoming another Unix user needs root (CI runs as root)"
)
USAGE = pb.Usage(input_tokens=100, model="gpt-4o")


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user may traverse (not list), for the socket."""
    directory = Path(tempfile.mkdtemp(prefix="budgetd-auth-e2e-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _start(
    daemons: list[Daemon], home: Path, socket: Path, config: str | None = None, *args: str
) -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    extra: list[str] = ["--socket", str(socket), *args]
    if config is not None:
        path = home / "budgetd.toml"
        path.write_text(config)
        extra += ["--config", str(path)]
    daemon = Daemon(home, extra, socket=socket)
    daemons.append(daemon)
    return daemon.start()


def as_user(
    uid: int, target: str, *calls: str, token: str | None = None
) -> dict[str, tuple[str, str]]:
    """Each call's (status code name, details) as that user made it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETD_")}
    if token is not None:
        env["BUDGETD_TEST_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.as_user", str(uid), str(uid), target, *calls],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    return {a["call"]: (a["code"], a["details"]) for a in answers}


def _consume(daemon: Daemon, request_id: str, labels: dict[str, str]) -> pb.ConsumeResponse:
    request = pb.ConsumeRequest(request_id=request_id, labels=labels, usage=USAGE)
    response: pb.ConsumeResponse = daemon.budget().Consume(request, timeout=WAIT_S)
    return response


def _policies(daemon: Daemon) -> set[str]:
    return {p.name for p in daemon.admin().ListPolicies(pb.ListPoliciesRequest()).policies}


@needs_root
def test_a_fresh_install_refuses_another_users_changes_and_reads(
    daemons: list[Daemon], tmp_path: Path, shared: Path
) -> None:
    daemon = _start(daemons, tmp_path / "d", shared / "budgetd.sock")
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert daemon.ready["unix_auth"] == "owner-only"
    _consume(daemon, "c1", {"agent": "owner", "thread": "t1"})
    before = daemon.budget().GetLedger(pb.GetLedgerRequest(key="daily")).ledger
    policies = _policies(daemon)
    calls = ("PutPolicy", "ResetLedger", "GetLedger", "ListLedgers", "ListPolicies", "Consume")

    # The socket: the file mode lets nobody else connect at all.
    over_socket = as_user(NOBODY, daemon.unix_target, *calls)
    for call in calls:
        code, details = over_socket[call]
        assert code == "UNAVAILABLE", call
        assert details.endswith(
            "connect failed: addr: " + daemon.unix_target + " error: Permission denied"
        ), details

    # TCP on loopback: without a token nothing but health and reflection.
    over_tcp = as_user(NOBODY, daemon.tcp_target, *calls, "Health")
    for call in calls:
        assert over_tcp[call][0] == "UNAUTHENTICATED", call
        assert "authorization: Bearer <token>" in over_tcp[call][1]
    assert over_tcp["Health"] == ("OK", "")

    assert _policies(daemon) == policies
    after = daemon.budget().GetLedger(pb.GetLedgerRequest(key="daily")).ledger
    assert after.totals == before.totals


@needs_root
def test_peer_credentials_give_other_users_their_roles(
    daemons: list[Daemon], tmp_path: Path, shared: Path
) -> None:
    config = f"[auth.unix]\nagent_uids = [{NOBODY}]\nreader_uids = [{READER_UID}]\n"
    daemon = _start(daemons, tmp_path / "d", shared / "budgetd.sock", config)
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o666  # the daemon decides
    assert daemon.ready["unix_auth"] == "peer-credentials"
    assert not any("cannot reach the socket" in str(r.get("event")) for r in daemon.lines)
    target = daemon.unix_target

    agent = as_user(NOBODY, target, "PutPolicy", "ResetLedger", "Consume", "GetLedger")
    for call in ("PutPolicy", "ResetLedger"):
        code, details = agent[call]
        assert code == "PERMISSION_DENIED"
        assert details == (
            f"uid {NOBODY} has the agent role (auth.unix.agent_uids); "
            f"/budgetd.v1.BudgetAdminService/{call} needs the admin role"
        )
    assert agent["Consume"] == ("OK", "")
    assert agent["GetLedger"] == ("OK", "")

    reader = as_user(READER_UID, target, "Consume", "ListPolicies", "GetLedger")
    assert reader["Consume"][0] == "PERMISSION_DENIED"
    assert "has the reader role (auth.unix.reader_uids)" in reader["Consume"][1]
    assert reader["ListPolicies"] == ("OK", "")
    assert reader["GetLedger"] == ("OK", "")

    stranger = as_user(STRANGER_UID, target, "Consume", "Health")
    assert stranger["Consume"][0] == "PERMISSION_DENIED"
    assert stranger["Consume"][1].startswith(f"uid {STRANGER_UID} has no role (auth.unix: ")
    assert stranger["Health"] == ("OK", "")

    # The daemon's own user, through the same relay, is admin.
    assert "everything-zero" not in _policies(daemon)
    owner = as_user(os.geteuid(), target, "PutPolicy")
    assert owner["PutPolicy"] == ("OK", "")
    ledger = daemon.budget().GetLedger(pb.GetLedgerRequest(key="agent-usage{agent=intruder}"))
    assert ledger.ledger.totals.requests == 1  # nobody's one Consume, counted once


ACME_AGENT: dict[str, object] = {
    "name": "acme",
    "token": "tok-acme",
    "role": "agent",
    "scope": {"tenant": "acme"},
}
OPS: dict[str, object] = {"name": "ops", "token": "tok-ops", "role": "admin"}
LATE: dict[str, object] = {"name": "late", "token": "tok-late", "role": "reader"}


def test_bearer_tokens_over_tcp_and_their_reload(daemons: list[Daemon], tmp_path: Path) -> None:
    home = tmp_path / "d"
    home.mkdir()
    tokens = home / "tokens.toml"
    token_file(tokens, ACME_AGENT, OPS)
    config = '[auth]\ntoken_files = ["tokens.toml"]\n'
    daemon = _start(daemons, home, home / "budgetd.sock", config)
    assert daemon.ready["tcp_auth"] == "tokens=2 certificates=0 anonymous=none"
    budget, admin = daemon.budget(daemon.tcp_target), daemon.admin(daemon.tcp_target)

    acme = {"tenant": "acme", "agent": "a1", "thread": "t1"}
    request = pb.ConsumeRequest(request_id="c1", labels=acme, usage=USAGE)
    assert budget.Consume(request, metadata=bearer("tok-acme"), timeout=WAIT_S).ledgers
    beta = pb.ConsumeRequest(request_id="c2", labels={**acme, "tenant": "beta"}, usage=USAGE)
    with pytest.raises(grpc.RpcError) as refused:
        budget.Consume(beta, metadata=bearer("tok-acme"), timeout=WAIT_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:
        admin.ListPolicies(pb.ListPoliciesRequest(), metadata=bearer("tok-acme"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert admin.ListPolicies(pb.ListPoliciesRequest(), metadata=bearer("tok-ops")).policies

    # SIGHUP: a new token works, a removed one does not, at once.
    token_file(tokens, ACME_AGENT, LATE)
    daemon.signal(signal.SIGHUP)
    assert daemon.wait_for("tokens reloaded")["tokens"] == 2
    assert admin.ListPolicies(pb.ListPoliciesRequest(), metadata=bearer("tok-late")).policies
    with pytest.raises(grpc.RpcError) as refused:
        admin.ListPolicies(pb.ListPoliciesRequest(), metadata=bearer("tok-ops"))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # A file that cannot be used keeps the tokens in force, and says why.
    tokens.chmod(0o666)
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_for("tokens reload rejected; keeping the current ones")
    assert "writable by group or others" in rejected["error"]
    assert admin.ListPolicies(pb.ListPoliciesRequest(), metadata=bearer("tok-late")).policies


@needs_root
def test_another_user_with_a_token_spends_over_tcp(daemons: list[Daemon], tmp_path: Path) -> None:
    home = tmp_path / "d"
    home.mkdir()
    token_file(home / "tokens.toml", {"name": "agents", "token": "tok-agents", "role": "agent"})
    daemon = _start(daemons, home, home / "budgetd.sock", '[auth]\ntoken_files = ["tokens.toml"]\n')
    answers = as_user(NOBODY, daemon.tcp_target, "Consume", "PutPolicy", token="tok-agents")
    assert answers["Consume"] == ("OK", "")
    assert answers["PutPolicy"][0] == "PERMISSION_DENIED"
    assert answers["PutPolicy"][1].startswith("token 'agents' has the agent role (token file ")


def _write_tls(home: Path, ca: Authority, server: Pem) -> None:
    server.write(home, "server")
    (home / "clients.pem").write_bytes(ca.pem)


def test_tls_and_mtls_with_a_reload(daemons: list[Daemon], tmp_path: Path) -> None:
    home = tmp_path / "d"
    home.mkdir()
    ca = Authority()
    _write_tls(home, ca, ca.server())
    config = (
        '[tls]\ncert_file = "server.pem"\nkey_file = "server.key"\nclient_ca_file = "clients.pem"\n'
        '[[auth.certificates]]\nidentity = "spiffe://acme/planner"\nrole = "agent"\n'
    )
    daemon = _start(daemons, home, home / "budgetd.sock", config)
    assert daemon.ready["tls"] == "mtls"
    target = daemon.tcp_target.replace("127.0.0.1", "localhost")
    planner = ca.issue("planner", ["spiffe://acme/planner"])

    def consume(root: bytes, client: Pem | None, request_id: str) -> grpc.StatusCode:
        creds = grpc.ssl_channel_credentials(
            root, client.key if client else None, client.cert if client else None
        )
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.secure_channel(target, creds, options=options) as channel:
            request = pb.ConsumeRequest(
                request_id=request_id, labels={"agent": "p", "thread": "t"}, usage=USAGE
            )
            try:
                rpc.BudgetServiceStub(channel).Consume(request, timeout=WAIT_S)
            except grpc.RpcError as error:
                failed: Any = error  # a grpc.Call too
                return failed.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    assert consume(ca.pem, planner, "c1") == grpc.StatusCode.OK
    assert consume(ca.pem, None, "c2") == grpc.StatusCode.UNAVAILABLE  # no client certificate
    assert consume(ca.pem, ca.issue("stranger"), "c3") == grpc.StatusCode.PERMISSION_DENIED

    # New server certificate from another CA, same files: new connections use it.
    other = Authority("rotated")
    _write_tls(home, ca, other.server())
    daemon.signal(signal.SIGHUP)
    assert daemon.wait_for("tls reloaded")
    assert consume(other.pem, planner, "c4") == grpc.StatusCode.OK
    assert consume(ca.pem, planner, "c5") == grpc.StatusCode.UNAVAILABLE


def test_beyond_loopback_tls_or_a_loud_flag(daemons: list[Daemon], tmp_path: Path) -> None:
    home = tmp_path / "tls"
    home.mkdir()
    ca = Authority()
    ca.server().write(home, "server")
    config = '[tls]\ncert_file = "server.pem"\nkey_file = "server.key"\n'
    secure = _start(daemons, home, home / "budgetd.sock", config, "--tcp", "0.0.0.0:0")
    assert secure.ready["tls"] == "tls"
    assert not any(str(r.get("event", "")).startswith("INSECURE") for r in secure.lines)

    plain_home = tmp_path / "plain"
    plain = _start(
        daemons, plain_home, plain_home / "budgetd.sock", None, "--tcp", "0.0.0.0:0",
        "--allow-non-loopback",
    )  # fmt: skip
    warning = next(r for r in plain.lines if str(r.get("event", "")).startswith("INSECURE"))
    assert warning["level"] == "warning"
    assert "plaintext TCP on a non-loopback address" in warning["event"]
