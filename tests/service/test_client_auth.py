"""The clients use what a gated daemon requires: bearer tokens, TLS and mTLS.

Goal: the Python SDK (sync and asyncio) and budgetctl, unmodified, against a real
in-process gRPC server behind the daemon's gate (`tests.service.gated`), prove that

- a valid token spends, on unary calls and on the Subscribe stream;
- a wrong or missing token is `Unauthenticated`, a reader's Consume `PermissionDenied`,
  each sent exactly once (the gate counts how often it is asked who the caller is),
  never failed open, and buffered usage is kept, not dropped, behind a bad token;
- TLS (the daemon's CA) and mTLS (a client certificate mapped to a role) work, with
  the target's own name or a `tls_server_name` override;
- the client's own mistakes (a missing or empty token file, a PEM that is not one, a
  key of another certificate, a token bound for plaintext beyond loopback) are a
  `CredentialsError` naming the file or the reason, when the client is made, and in
  budgetctl one line with exit 2.

Method: token files and certificates are made per test (`tests.auth_support`); the
gate's `Identities` is subclassed only to count its lookups on the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd.auth import Caller, Role
from budgetd.auth import tokens as token_table
from budgetd.auth.gate import Identities, anonymous_tcp
from budgetd.auth.tls import CertificateRoles, Tls, TlsFiles
from budgetd.core import Limits
from budgetd_client import (
    AsyncBudgetClient,
    BudgetClient,
    BudgetdUnavailable,
    CredentialsError,
    PermissionDenied,
    Unauthenticated,
    Usage,
)
from budgetd_client._credentials import is_local
from budgetd_client.ctl import Exit, main
from tests.auth_support import Authority, Pem, token_file
from tests.service.client_support import FAST, AsyncFlaky, Flaky, Seen
from tests.service.gated import Gated, serve_gated

LABELS = {"agent": "writer", "thread": "t1"}
THREAD_KEY = "per-thread{thread=t1}"
USAGE = Usage(100, 20, model="gpt-4o")
TOKENS: dict[str, dict[str, object]] = {
    "agent": {"name": "agents", "token": "tok-agent", "role": "agent"},
    "reader": {"name": "dash", "token": "tok-reader", "role": "reader"},
    "admin": {"name": "ops", "token": "tok-admin", "role": "admin"},
}
PLANNER_SAN = "spiffe://acme/planner"


@dataclass
class Counting(Identities):
    """The gate's identities, counting how often the gate asked: once per call sent."""

    asked: int = 0

    def of(self, context: Any) -> Caller:
        self.asked += 1
        return super().of(context)


@dataclass
class Daemon:
    gated: Gated
    identities: Counting
    tokens: Path  # the daemon's token file (hashes)
    ca: Authority | None = None
    ca_file: Path | None = None

    @property
    def target(self) -> str:
        return self.gated.target

    @property
    def localhost(self) -> str:
        """The target by the name the test server certificates have."""
        return self.gated.target.replace("127.0.0.1", "localhost")


def _identities(tmp_path: Path, certificates: CertificateRoles | None = None) -> Counting:
    path = token_file(tmp_path / "tokens.toml", *TOKENS.values())
    table = token_table.load([path], None, Limits())
    return Counting(anonymous_tcp(None), tokens=table, certificates=certificates)


def _tls_files(tmp_path: Path, ca: Authority, mutual: bool) -> tuple[TlsFiles, Path]:
    """The server's files, in a directory of their own (a test may run two servers)."""
    home = tmp_path / ("mtls" if mutual else "tls")
    home.mkdir()
    cert, key = ca.server().write(home, "server")
    ca_file = home / "ca.pem"
    ca_file.write_bytes(ca.pem)
    return TlsFiles(cert, key, ca_file if mutual else None), ca_file


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """Plaintext loopback TCP, tokens required."""
    identities = _identities(tmp_path)
    for gated in serve_gated(identities):
        yield Daemon(gated, identities, tmp_path / "tokens.toml")


@pytest.fixture
def tls_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """TLS (no client certificates), tokens required."""
    ca = Authority()
    files, ca_file = _tls_files(tmp_path, ca, mutual=False)
    identities = _identities(tmp_path)
    for gated in serve_gated(identities, tls=Tls(files)):
        yield Daemon(gated, identities, tmp_path / "tokens.toml", ca, ca_file)


@pytest.fixture
def mtls_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """mTLS: a certificate of the CA on every connection; the planner's is an agent."""
    ca = Authority()
    files, ca_file = _tls_files(tmp_path, ca, mutual=True)
    planner = Caller(f"client certificate {PLANNER_SAN!r}", Role.AGENT, "test", key="planner")
    identities = _identities(tmp_path, CertificateRoles({PLANNER_SAN: planner}))
    for gated in serve_gated(identities, tls=Tls(files)):
        yield Daemon(gated, identities, tmp_path / "tokens.toml", ca, ca_file)


def _secret(tmp_path: Path, who: str) -> Path:
    """The file an agent keeps its token in (0600, with the newline editors add)."""
    path = tmp_path / f"{who}.token"
    path.write_text(f"{TOKENS[who]['token']}\n")
    path.chmod(0o600)
    return path


def _client_cert(tmp_path: Path, ca: Authority, name: str, sans: list[str]) -> tuple[Path, Path]:
    pem: Pem = ca.issue(name, sans)
    return pem.write(tmp_path, f"client-{name}")


# --- tokens, sync ------------------------------------------------------------------------


def test_a_valid_token_spends_and_reads(daemon: Daemon, tmp_path: Path) -> None:
    with BudgetClient(daemon.target, token="tok-agent", timeout_s=30) as budget:
        result = budget.consume(LABELS, USAGE)
        assert THREAD_KEY in [ledger.key for ledger in result.ledgers]
        assert budget.get_ledger(THREAD_KEY).totals.total_tokens == 120
        with budget.run(LABELS, ttl_s=60) as run:
            run.consume(USAGE)
        assert run.totals is not None and run.totals.totals.total_tokens == 120
    # The same from a token file, and from each environment variable.
    with BudgetClient(daemon.target, token_file=_secret(tmp_path, "reader")) as reader:
        assert reader.get_ledger("daily").totals.total_tokens == 240


def test_tokens_from_the_environment(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGETD_TOKEN", "tok-agent")
    with BudgetClient(daemon.target) as budget:
        budget.consume(LABELS, USAGE)
    monkeypatch.delenv("BUDGETD_TOKEN")
    monkeypatch.setenv("BUDGETD_TOKEN_FILE", str(_secret(tmp_path, "reader")))
    with BudgetClient(daemon.target) as budget:
        assert budget.get_ledger(THREAD_KEY).totals.total_tokens == 120
        # An argument wins over the environment: the agent token may consume.
        with BudgetClient(daemon.target, token="tok-agent") as agent:
            agent.consume(LABELS, USAGE)


def test_a_wrong_token_is_unauthenticated_sent_once(daemon: Daemon) -> None:
    seen = Seen()
    for fails in ("deny", "allow"):  # failing open is for an unreachable daemon only
        with BudgetClient(
            daemon.target,
            token="tok-typo",
            on_unavailable=fails,
            retries=5,
            backoff=FAST,
            interceptors=[Flaky(seen)],
        ) as budget:
            before = daemon.identities.asked
            with pytest.raises(Unauthenticated) as raised:
                budget.consume(LABELS, USAGE)
            assert daemon.identities.asked == before + 1  # the server saw one attempt
            assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert f"budgetd at {daemon.target} does not know this caller" in str(raised.value)
            assert "no token file lists its sha256" in str(raised.value)
            assert raised.value.request_id is not None  # safe to retry once fixed
            with pytest.raises(Unauthenticated):
                budget.check(LABELS, USAGE)  # an ALLOW offline would be a lie
    assert len(seen.requests("Consume")) == 2  # and the client sent each once


def test_no_token_at_all_is_unauthenticated(daemon: Daemon) -> None:
    with (
        BudgetClient(daemon.target, retries=5, backoff=FAST) as budget,
        pytest.raises(Unauthenticated, match=r"a TCP call needs 'authorization: Bearer"),
    ):
        budget.get_ledger("daily")
    assert daemon.identities.asked == 1


def test_a_readers_consume_is_permission_denied_sent_once(daemon: Daemon) -> None:
    with BudgetClient(daemon.target, token="tok-reader", retries=5, backoff=FAST) as budget:
        with pytest.raises(PermissionDenied) as raised:
            budget.consume(LABELS, USAGE)
        assert daemon.identities.asked == 1
        assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "token 'dash' has the reader role" in str(raised.value)
        assert "needs the agent or admin role" in str(raised.value)
        with pytest.raises(PermissionDenied), budget.run(LABELS):
            pass
        assert list(budget.list_ledgers()) == []  # reads are a reader's


def test_buffered_usage_is_kept_behind_a_bad_token(daemon: Daemon) -> None:
    """Offline usage, then the daemon answers UNAUTHENTICATED to its replay: the
    record stays buffered (the daemon never looked at it), nothing is dropped."""
    seen = Seen(mode="drop", faults=1)
    with BudgetClient(
        daemon.target,
        token="tok-old",
        on_unavailable="allow",
        retries=0,
        offline_recheck_s=0,
        interceptors=[Flaky(seen)],
    ) as budget:
        assert budget.consume(LABELS, USAGE).offline  # dropped: buffered
        assert budget.buffered == 1
        with pytest.raises(Unauthenticated):
            budget.check(LABELS, USAGE)  # the replay came first, and stopped
        assert (budget.buffered, budget.dropped_records) == (1, 0)
        assert [name for name, _ in seen.calls] == ["Consume", "Consume"]  # never Check
        assert budget.flush() == 1  # still kept, logged


def test_the_event_stream_carries_the_token(daemon: Daemon) -> None:
    with (
        BudgetClient(daemon.target, token="tok-reader", timeout_s=30) as reader,
        BudgetClient(daemon.target, token="tok-agent", timeout_s=30) as agent,
        reader.subscribe(selector={"thread": "t1"}, after_seq=0) as events,
    ):
        agent.consume(LABELS, USAGE)
        assert next(events).labels["thread"] == "t1"
    with BudgetClient(daemon.target, token="tok-typo", resubscribe_backoff=FAST) as stranger:
        before = daemon.identities.asked
        with stranger.subscribe() as refused, pytest.raises(Unauthenticated):
            next(refused)
        assert daemon.identities.asked == before + 1  # not resubscribed


# --- tokens, asyncio ------------------------------------------------------------------


def test_async_tokens_spend_refuse_and_stream(daemon: Daemon, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncBudgetClient(
            daemon.target, token_file=_secret(tmp_path, "agent"), timeout_s=30
        ) as budget:
            await budget.consume(LABELS, USAGE)
            async with budget.reserve(LABELS, USAGE) as held:
                await held.commit(USAGE)
            assert (await budget.get_ledger(THREAD_KEY)).totals.total_tokens == 240
            async with budget.subscribe(after_seq=0) as events:
                assert (await anext(events)).labels["thread"] == "t1"
        seen = Seen()
        interceptors: list[Any] = [AsyncFlaky(seen)]  # the stubs' aio interceptor types are partial
        async with AsyncBudgetClient(
            daemon.target, token="tok-typo", retries=5, backoff=FAST,
            on_unavailable="allow", interceptors=interceptors,
        ) as stranger:  # fmt: skip
            before = daemon.identities.asked
            with pytest.raises(Unauthenticated):
                await stranger.consume(LABELS, USAGE)
            assert daemon.identities.asked == before + 1
            assert len(seen.calls) == 1
        async with AsyncBudgetClient(daemon.target, token="tok-reader", retries=5) as reader:
            before = daemon.identities.asked
            with pytest.raises(PermissionDenied):
                await reader.consume(LABELS, USAGE)
            assert daemon.identities.asked == before + 1

    asyncio.run(scenario())


# --- TLS and mTLS ----------------------------------------------------------------------


def test_tls_with_the_daemons_ca_and_a_token(tls_daemon: Daemon) -> None:
    ca = tls_daemon.ca_file
    with BudgetClient(tls_daemon.localhost, token="tok-agent", tls_ca=ca, timeout_s=30) as b:
        b.consume(LABELS, USAGE)
    # By address, with the name the certificate has.
    with BudgetClient(
        tls_daemon.target, token="tok-reader", tls_ca=ca, tls_server_name="localhost"
    ) as reader:
        assert reader.get_ledger(THREAD_KEY).totals.total_tokens == 120

    async def scenario() -> None:
        async with AsyncBudgetClient(
            tls_daemon.localhost, token="tok-agent", tls_ca=ca, timeout_s=30
        ) as budget:
            await budget.consume(LABELS, USAGE)
            assert (await budget.get_ledger(THREAD_KEY)).totals.total_tokens == 240

    asyncio.run(scenario())


def test_tls_that_does_not_verify_is_unavailable(tls_daemon: Daemon, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(Authority("someone else").pem)
    for options in ({"tls_ca": other}, {}):  # another CA; plaintext to a TLS port
        with (
            BudgetClient(tls_daemon.localhost, retries=0, **options) as budget,  # type: ignore[arg-type]
            pytest.raises(BudgetdUnavailable),
        ):
            budget.get_ledger("daily")
    assert tls_daemon.identities.asked == 0  # no call got past the handshake


def test_mtls_with_a_client_certificate(mtls_daemon: Daemon, tmp_path: Path) -> None:
    assert mtls_daemon.ca is not None
    cert, key = _client_cert(tmp_path, mtls_daemon.ca, "planner", [PLANNER_SAN])
    options: dict[str, Any] = {"tls_ca": mtls_daemon.ca_file, "tls_cert": cert, "tls_key": key}
    with BudgetClient(mtls_daemon.localhost, timeout_s=30, **options) as planner:
        planner.consume(LABELS, USAGE)  # the certificate is an agent
    with BudgetClient(mtls_daemon.localhost, token="tok-admin", **options) as admin:
        assert admin.get_ledger(THREAD_KEY).totals.total_tokens == 120  # the token decides

    async def scenario() -> None:
        async with AsyncBudgetClient(mtls_daemon.localhost, timeout_s=30, **options) as b:
            await b.consume(LABELS, USAGE)

    asyncio.run(scenario())
    stranger_cert, stranger_key = _client_cert(tmp_path, mtls_daemon.ca, "x", ["spiffe://x"])
    with (
        BudgetClient(
            mtls_daemon.localhost, tls_ca=mtls_daemon.ca_file, tls_cert=stranger_cert,
            tls_key=stranger_key,
        ) as stranger,
        pytest.raises(PermissionDenied, match="lists none of its identities"),
    ):  # fmt: skip
        stranger.consume(LABELS, USAGE)


# --- the client's own mistakes -------------------------------------------------------


def test_credential_files_that_cannot_be_used_name_the_file(tmp_path: Path) -> None:
    target = "127.0.0.1:1"  # never reached: everything is checked when the client is made
    missing = tmp_path / "missing.token"
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    spaced = tmp_path / "spaced.token"
    spaced.write_text("two words\n")
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello\n")
    ca = Authority()
    cert, _ = ca.issue("a").write(tmp_path, "a")
    _, other_key = ca.issue("b").write(tmp_path, "b")
    cases: list[tuple[dict[str, Any], str, Path | None]] = [
        ({"token_file": missing}, f"token_file= {missing}: cannot read: No such file", missing),
        ({"token_file": tmp_path}, f"token_file= {tmp_path}: cannot read", tmp_path),
        ({"token_file": empty}, f"token_file= {empty}: the token is empty", empty),
        ({"token_file": spaced}, "printable ASCII without spaces", spaced),
        ({"tls_ca": not_pem}, f"tls_ca {not_pem}: not a PEM file", not_pem),
        ({"tls_ca": missing}, f"tls_ca {missing}: cannot read", missing),
        ({"tls_cert": cert, "tls_key": other_key}, f"not the key of tls_cert {cert}", other_key),
        ({"tls_cert": cert}, "needs both tls_cert and tls_key", None),
        ({"token": "a", "token_file": empty}, "token= or token_file=, not both", None),
        ({"token": ""}, "token=: the token is empty", None),
        ({"tls": False, "tls_ca": cert}, "tls=False, but tls_ca given", None),
    ]
    for options, message, path in cases:
        for make in (BudgetClient, AsyncBudgetClient):
            with pytest.raises(CredentialsError) as raised:
                make(target, **options)
            assert message in str(raised.value), (options, str(raised.value))
            assert raised.value.path == path
            assert isinstance(raised.value, ValueError)


def test_the_environment_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETD_TOKEN", "a")
    monkeypatch.setenv("BUDGETD_TOKEN_FILE", str(tmp_path / "t"))
    with pytest.raises(CredentialsError, match=r"\$BUDGETD_TOKEN and \$BUDGETD_TOKEN_FILE"):
        BudgetClient("127.0.0.1:1")
    monkeypatch.delenv("BUDGETD_TOKEN")
    with pytest.raises(CredentialsError, match=rf"\$BUDGETD_TOKEN_FILE {tmp_path / 't'}"):
        BudgetClient("127.0.0.1:1")
    monkeypatch.delenv("BUDGETD_TOKEN_FILE")
    monkeypatch.setenv("BUDGETD_TLS_CA", str(tmp_path / "nope.pem"))
    with pytest.raises(CredentialsError, match=r"tls_ca .*nope\.pem: cannot read"):
        BudgetClient("127.0.0.1:1")
    monkeypatch.setenv("BUDGETD_TLS", "maybe")
    monkeypatch.delenv("BUDGETD_TLS_CA")
    with pytest.raises(CredentialsError, match=r"\$BUDGETD_TLS must be 1 or 0"):
        BudgetClient("127.0.0.1:1")


def test_a_token_never_goes_in_plaintext_beyond_loopback() -> None:
    for target in ("10.0.0.7:50051", "budget.example.com:50051", "dns:///example.com:1",
                   "ipv4:127.0.0.1:1,10.0.0.1:1", "xds:///budgetd", "[2001:db8::1]:1"):  # fmt: skip
        assert not is_local(target), target
        with pytest.raises(CredentialsError, match="refusing to send the bearer token") as no:
            BudgetClient(target, token="tok")
        assert f"in plaintext to {target}" in str(no.value)
        assert "tok" not in str(no.value).replace("token", "")  # never the token itself
        BudgetClient(target).close()  # without a token: nothing to leak
    for target in ("127.0.0.1:1", "localhost:1", "[::1]:1", "ipv6:[::1]:1", "dns:localhost:1",
                   "unix:/tmp/x.sock", "/tmp/x.sock", "127.8.9.10:1"):  # fmt: skip
        assert is_local(target), target
        BudgetClient(target, token="tok").close()


def test_the_token_is_not_in_a_repr(tmp_path: Path) -> None:
    with BudgetClient("127.0.0.1:1", token="tok-secret-1") as budget:
        assert "tok-secret-1" not in repr(budget._transport.settings)


# --- budgetctl -----------------------------------------------------------------------


def _ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_budgetctl_with_a_token(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    with BudgetClient(daemon.target, token="tok-agent") as agent:
        agent.consume(LABELS, USAGE)
    reader = str(_secret(tmp_path, "reader"))
    code, out, _ = _ctl(capsys, "--target", daemon.target, "--token-file", reader, "status")
    assert code == Exit.OK and "per-thread{thread=t1}" in out
    # A token flag after the command name, and the event stream with it.
    code, out, _ = _ctl(
        capsys, "watch", "--target", daemon.target, "--token", "tok-reader",
        "--after-seq", "0", "--count", "1", "--json",
    )  # fmt: skip
    assert code == Exit.OK and json.loads(out)["labels"]["thread"] == "t1"
    monkeypatch.setenv("BUDGETD_TOKEN_FILE", reader)
    code, out, _ = _ctl(capsys, "--target", daemon.target, "ledger", THREAD_KEY, "--json")
    assert code == Exit.OK and json.loads(out)["ledger"]["totals"]["total_tokens"] == 120


def test_budgetctl_refusals_are_one_line_exit_7(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _ctl(capsys, "--target", daemon.target, "--token", "tok-typo", "status")
    assert code == Exit.NOT_ALLOWED
    assert err.count("\n") == 1 and err.startswith("budgetctl: unauthenticated: the bearer")
    assert "--token-file" in err  # says what to give
    code, _, err = _ctl(capsys, "--target", daemon.target, "status")
    assert code == Exit.NOT_ALLOWED and "no credentials" in err
    code, _, err = _ctl(
        capsys, "--target", daemon.target, "--token", "tok-agent", "policies", "delete", "x"
    )
    assert code == Exit.NOT_ALLOWED and err.count("\n") == 1
    assert err.startswith("budgetctl: permission denied: token 'agents' has the agent role")


def test_budgetctl_credential_mistakes_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.token"
    cases = [
        (["--token-file", str(missing)], f"--token-file {missing}: cannot read"),
        (["--tls-ca", str(missing)], f"--tls-ca {missing}: cannot read"),
        (["--tls-cert", str(missing)], "needs both --tls-cert and --tls-key"),
        (["--token", "a", "--token-file", str(missing)], "give --token or --token-file"),
        (["--target", "10.0.0.7:50051", "--token", "tok"], "the bearer token (--token) in"),
        (
            ["--target", "10.0.0.7:50051", "--token-file", str(_secret(tmp_path, "agent"))],
            f"the bearer token (--token-file {tmp_path / 'agent.token'}) in plaintext",
        ),
    ]
    for flags, message in cases:
        argv = ["--target", "127.0.0.1:1", *flags, "status"]
        code, _, err = _ctl(capsys, *argv)
        assert code == Exit.USAGE, (flags, err)
        assert err.count("\n") == 1 and message in err, (flags, err)
        assert "Traceback" not in err
    code, _, err = _ctl(capsys, "--target", "https://budget.example.com:50051", "status")
    assert code == Exit.USAGE and "--target budget.example.com:50051 --tls" in err


def test_budgetctl_over_tls_and_mtls(
    tls_daemon: Daemon, mtls_daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(tls_daemon.ca_file)
    code, out, err = _ctl(
        capsys, "--target", tls_daemon.target, "--tls-ca", ca, "--tls-server-name",
        "localhost", "--token", "tok-reader", "status", "--json",
    )  # fmt: skip
    assert code == Exit.OK, err
    assert json.loads(out)["ledgers"] == []
    code, _, err = _ctl(capsys, "--target", tls_daemon.localhost, "--token", "tok-reader", "status")
    assert code == Exit.UNAVAILABLE, err  # plaintext to a TLS listener: no connection

    assert mtls_daemon.ca is not None
    cert, key = _client_cert(tmp_path, mtls_daemon.ca, "planner", [PLANNER_SAN])
    code, out, err = _ctl(
        capsys, "--target", mtls_daemon.localhost, "--tls-ca", str(mtls_daemon.ca_file),
        "--tls-cert", str(cert), "--tls-key", str(key), "status", "--json",
    )  # fmt: skip
    assert code == Exit.OK, err  # the planner's certificate is an agent: it may read


def test_tls_from_the_environment(
    tls_daemon: Daemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGETD_TLS_CA", str(tls_daemon.ca_file))
    monkeypatch.setenv("BUDGETD_TLS_SERVER_NAME", "localhost")
    monkeypatch.setenv("BUDGETD_TOKEN", "tok-agent")
    with BudgetClient(tls_daemon.target, timeout_s=30) as budget:
        budget.consume(LABELS, USAGE)
    with BudgetClient(tls_daemon.target, tls=True, timeout_s=30) as budget:  # files: env's
        budget.consume(LABELS, USAGE)
    code, out, err = _ctl(capsys, "--target", tls_daemon.target, "--tls", "status", "--json")
    assert code == Exit.OK, err
    assert json.loads(out)["ledgers"]
    # An explicit TLS argument replaces the environment's: this CA does not exist.
    with pytest.raises(CredentialsError, match=r"tls_ca /nonexistent\.pem: cannot read"):
        BudgetClient(tls_daemon.target, tls_ca="/nonexistent.pem")
    with (
        BudgetClient(tls_daemon.localhost, tls=False, retries=0) as plaintext,
        pytest.raises(BudgetdUnavailable),  # tls=False: plaintext, to a TLS listener
    ):
        plaintext.get_ledger("daily")
