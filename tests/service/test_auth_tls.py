"""TLS and mTLS on a real in-process server: encryption, client certificates as
identities, and a reload of the files for new connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.auth import Caller, Role
from budgetd.auth import tokens as token_table
from budgetd.auth.gate import Identities, anonymous_tcp
from budgetd.auth.tls import CertificateRoles, Tls, TlsError, TlsFiles
from budgetd.core import Limits
from tests.auth_support import Authority, Pem, bearer, token_file
from tests.service.gated import Gated, serve_gated

PLANNER = Caller(
    "client certificate 'spiffe://acme/planner'",
    Role.AGENT,
    "auth.certificates[0]",
    (("tenant", "acme"),),
    key="cert:planner",
)


def _credentials(ca: Authority, client: Pem | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(ca.pem)
    return grpc.ssl_channel_credentials(ca.pem, client.key, client.cert)


def _health(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    except grpc.RpcError as error:
        failed: Any = error
        return failed.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _files(tmp_path: Path, ca: Authority, mutual: bool) -> TlsFiles:
    cert, key = ca.server().write(tmp_path, "server")
    client_ca = None
    if mutual:
        client_ca = tmp_path / "clients.pem"
        client_ca.write_bytes(ca.pem)
    return TlsFiles(cert, key, client_ca)


def test_tls_encrypts_and_tokens_still_decide(tmp_path: Path) -> None:
    ca = Authority()
    path = token_file(tmp_path / "t.toml", {"name": "a", "token": "tok", "role": "agent"})
    identities = Identities(anonymous_tcp(None), tokens=token_table.load([path], None, Limits()))
    for gated in serve_gated(identities, tls=Tls(_files(tmp_path, ca, mutual=False)), probe=True):
        secure = gated.channel(_credentials(ca))
        assert gated.who(secure, bearer("tok"))["name"] == "token 'a'"
        assert _health(gated.channel()) == grpc.StatusCode.UNAVAILABLE  # plaintext: no
        assert _health(gated.channel(_credentials(Authority()))) == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def mutual(tmp_path: Path) -> Any:
    ca = Authority()
    path = token_file(tmp_path / "t.toml", {"name": "ops", "token": "tok-ops", "role": "admin"})
    identities = Identities(
        anonymous_tcp(None),
        tokens=token_table.load([path], None, Limits()),
        certificates=CertificateRoles({"spiffe://acme/planner": PLANNER}),
    )
    for gated in serve_gated(identities, tls=Tls(_files(tmp_path, ca, mutual=True)), probe=True):
        yield gated, ca


def test_a_mapped_client_certificate_is_the_caller(mutual: tuple[Gated, Authority]) -> None:
    gated, ca = mutual
    planner = ca.issue("planner", ["spiffe://acme/planner"])
    channel = gated.channel(_credentials(ca, planner))
    assert gated.who(channel) == {
        "name": "client certificate 'spiffe://acme/planner'",
        "role": "agent",
        "scope": {"tenant": "acme"},
    }
    # A bearer token on the same connection decides for its call.
    assert gated.who(channel, bearer("tok-ops"))["role"] == "admin"


def test_an_unmapped_certificate_has_no_role(mutual: tuple[Gated, Authority]) -> None:
    gated, ca = mutual
    channel = gated.channel(_credentials(ca, ca.issue("stranger")))  # CN only, no SAN
    with pytest.raises(grpc.RpcError) as raised:
        gated.who(channel)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == (
        "client certificate 'stranger' has no role (auth.certificates lists none of its "
        "identities); /budgetd.v1.BudgetService/GetLedger needs the agent or reader or "
        "admin role"
    )


def test_without_a_certificate_of_the_ca_there_is_no_connection(
    mutual: tuple[Gated, Authority],
) -> None:
    gated, ca = mutual
    assert _health(gated.channel(_credentials(ca))) == grpc.StatusCode.UNAVAILABLE
    other = Authority()
    foreign = other.issue("planner", ["spiffe://acme/planner"])
    assert _health(gated.channel(_credentials(ca, foreign))) == grpc.StatusCode.UNAVAILABLE
    assert _health(gated.channel(_credentials(ca, ca.issue("x")))) == grpc.StatusCode.OK


def test_a_reload_serves_new_connections_with_the_new_files(tmp_path: Path) -> None:
    old_ca, new_ca = Authority("old"), Authority("new")
    files = _files(tmp_path, old_ca, mutual=False)
    tls = Tls(files)
    for gated in serve_gated(Identities(anonymous_tcp(None)), tls=tls):
        before = gated.channel(_credentials(old_ca))
        assert _health(before) == grpc.StatusCode.OK
        new_ca.server().write(tmp_path, "server")  # the same paths, new contents
        tls.reload()
        assert _health(gated.channel(_credentials(new_ca))) == grpc.StatusCode.OK
        assert _health(gated.channel(_credentials(old_ca))) == grpc.StatusCode.UNAVAILABLE
        assert _health(before) == grpc.StatusCode.OK  # an open connection keeps its own

        # A reload that cannot read good files changes nothing.
        files.key_file.write_bytes(Authority().server().key)  # not the certificate's key
        with pytest.raises(TlsError, match=r"not the key of tls\.cert_file"):
            tls.reload()
        assert _health(gated.channel(_credentials(new_ca))) == grpc.StatusCode.OK
