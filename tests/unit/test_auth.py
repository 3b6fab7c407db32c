"""The pure parts of budgetd.auth: the role table, callers and scopes, rates, stream
bounds, peer-credential roles."""

from __future__ import annotations

import contextvars
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from budgetd.auth import UNRESTRICTED, Caller, Rate, Role, caller_of, methods
from budgetd.auth.access import closed_directory
from budgetd.auth.caller import set_caller
from budgetd.auth.peercred import PeerCredentials, UnixRoles, peer_credentials, roles_from
from budgetd.auth.ratelimit import RateLimiter
from budgetd.auth.streams import OWNER_SOCKET_PEER, StreamBounds
from budgetd.errors import PermissionDenied
from budgetd.v1 import budget_pb2

ACME = Caller("token 'acme'", Role.AGENT, "token file t.toml", (("tenant", "acme"),))

# ---------------------------------------------------------------------------------------
# The role table
# ---------------------------------------------------------------------------------------


def _contract_methods() -> set[str]:
    return {
        f"/{service.full_name}/{method.name}"
        for service in budget_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_every_rpc_of_the_contract_is_placed_in_exactly_one_group() -> None:
    """A new RPC fails this until it is decided who may call it (until then: admin)."""
    groups = (methods.SPENDS, methods.READS, methods.ADMIN_ONLY)
    for method in _contract_methods():
        assert sum(method in group for group in groups) == 1, method
    assert set().union(*groups) == _contract_methods()


def test_roles_per_method() -> None:
    budget, admin = methods.BUDGET_SERVICE, methods.ADMIN_SERVICE
    assert methods.roles_for(f"/{budget}/Consume") == {Role.AGENT, Role.ADMIN}
    assert methods.roles_for(f"/{budget}/ConsumeStream") == {Role.AGENT, Role.ADMIN}
    assert methods.roles_for(f"/{budget}/Subscribe") == set(Role)
    assert methods.roles_for(f"/{budget}/GetLedger") == set(Role)
    assert methods.roles_for(f"/{admin}/ListPolicies") == {Role.READER, Role.ADMIN}
    assert methods.roles_for(f"/{admin}/GetServerInfo") == {Role.READER, Role.ADMIN}
    assert methods.roles_for(f"/{admin}/PutPolicy") == {Role.ADMIN}
    assert methods.roles_for(f"/{admin}/ResetLedger") == {Role.ADMIN}
    assert methods.roles_for(f"/{budget}/SomethingNew") == {Role.ADMIN}  # fail closed


def test_health_and_reflection_are_open_and_budgetd_is_not() -> None:
    assert methods.is_open("/grpc.health.v1.Health/Watch")
    assert methods.is_open("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    assert methods.is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not methods.is_open(f"/{methods.BUDGET_SERVICE}/Check")
    assert not methods.is_open(f"/{methods.ADMIN_SERVICE}/Snapshot")


def test_labeled_methods_are_the_spends_that_carry_labels() -> None:
    for method in methods.LABELED:
        name = method.rsplit("/", 1)[1]
        request = budget_pb2.DESCRIPTOR.message_types_by_name[f"{name}Request"]
        assert "labels" in request.fields_by_name, method
    assert methods.LABELED <= methods.SPENDS


# ---------------------------------------------------------------------------------------
# Callers and scopes
# ---------------------------------------------------------------------------------------


def test_an_unscoped_caller_sees_everything_and_narrows_nothing() -> None:
    assert UNRESTRICTED.scope is None
    assert UNRESTRICTED.sees({})
    assert UNRESTRICTED.sees({"tenant": "beta"})
    assert UNRESTRICTED.narrow({"agent": "a"}) == {"agent": "a"}
    assert UNRESTRICTED.scope_violation({}) is None


def test_a_scoped_caller_sees_only_what_carries_its_scope() -> None:
    assert ACME.scope == {"tenant": "acme"}
    assert ACME.sees({"tenant": "acme", "agent": "a"})
    assert not ACME.sees({"tenant": "beta"})
    assert not ACME.sees({"agent": "a"})  # a shared ledger has no tenant: not ACME's
    with pytest.raises(TypeError):
        ACME.scope["tenant"] = "beta"  # type: ignore[index]  # read-only


def test_narrow_adds_the_scope_or_says_the_selector_selects_nothing() -> None:
    assert ACME.narrow({}) == {"tenant": "acme"}
    assert ACME.narrow({"agent": "a"}) == {"agent": "a", "tenant": "acme"}
    assert ACME.narrow({"tenant": "acme"}) == {"tenant": "acme"}
    assert ACME.narrow({"tenant": "*"}) == {"tenant": "acme"}
    assert ACME.narrow({"tenant": "beta"}) is None


def test_a_scope_violation_names_the_callers_own_rule_not_the_other_tenant() -> None:
    message = ACME.scope_violation({"tenant": "beta-corp"})
    assert message is not None
    assert "beta-corp" not in message
    assert "token 'acme'" in message and "token file t.toml" in message
    assert "labels.tenant must be 'acme'" in message
    assert ACME.scope_violation({"agent": "a"}) is not None  # lacking the key
    assert ACME.scope_violation({"tenant": "acme", "agent": "a"}) is None
    with pytest.raises(PermissionDenied, match=r"request\.labels\.tenant"):
        ACME.require_inside({"tenant": "x"}, "request.labels")
    ACME.require_inside({"tenant": "acme"})


def test_caller_of_is_unrestricted_unless_the_gate_set_one_for_this_call() -> None:
    assert caller_of(None) is UNRESTRICTED

    def in_a_call() -> Caller:
        set_caller(ACME)
        return caller_of(None)

    assert contextvars.copy_context().run(in_a_call) is ACME
    assert caller_of(None) is UNRESTRICTED  # another call's (task's) caller never leaks


# ---------------------------------------------------------------------------------------
# Rates
# ---------------------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    limiter, rate = RateLimiter(), Rate(4.0, 3)  # times in binary fractions: exact sums
    assert [limiter.take("k", rate, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k", rate, 100.0) == 0.25
    assert limiter.take("k", rate, 100.125) == 0.125  # half refilled
    assert limiter.take("k", rate, 100.25) == 0.0
    assert limiter.take("k", rate, 100.25) == 0.25
    assert limiter.take("other", rate, 100.25) == 0.0  # buckets are per identity


def test_a_bucket_refills_up_to_its_burst_only() -> None:
    limiter, rate = RateLimiter(), Rate(1000.0, 2)
    for _ in range(2):
        limiter.take("k", rate, 0.0)
    assert [limiter.take("k", rate, 3600.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k", rate, 3600.0) > 0


def test_a_batch_costs_its_operations_and_may_leave_the_bucket_in_debt() -> None:
    limiter, rate = RateLimiter(), Rate(4.0, 3)
    assert limiter.take("k", rate, 100.0, cost=2) == 0.0  # 1 left
    assert limiter.take("k", rate, 100.0, cost=8) == 0.0  # one fits: goes, 7 in debt
    assert limiter.take("k", rate, 100.0) == 2.0  # (1 - -7) / 4: the average rate holds
    assert limiter.take("k", rate, 102.0, cost=100) == 0.0  # never refused for ever


def test_buckets_are_bounded() -> None:
    limiter, rate = RateLimiter(max_buckets=4), Rate(1.0, 1)
    for i in range(4):
        limiter.take(f"k{i}", rate, 0.0)  # each now empty
    limiter.take("k4", rate, 0.5)  # none full yet: the older half goes
    assert len(limiter) <= 4
    limiter.take("k5", rate, 100.0)  # all full again: they go, as new ones would be
    assert len(limiter) <= 4
    assert limiter.take("k5", rate, 100.0) > 0  # k5's own bucket was kept


# ---------------------------------------------------------------------------------------
# Stream bounds
# ---------------------------------------------------------------------------------------


def test_streams_are_bounded_per_connection_and_in_total() -> None:
    bounds = StreamBounds(max_total=3, max_per_connection=2)
    assert bounds.open("ipv4:127.0.0.1:1") is None
    assert bounds.open("ipv4:127.0.0.1:1") is None
    refused = bounds.open("ipv4:127.0.0.1:1")
    assert refused is not None and "max_streams_per_connection=2" in refused
    assert bounds.open("ipv4:127.0.0.1:2") is None
    refused = bounds.open("ipv4:127.0.0.1:3")
    assert refused is not None and "max_streams_total=3" in refused
    bounds.close("ipv4:127.0.0.1:1")
    assert bounds.open("ipv4:127.0.0.1:3") is None
    assert bounds.total == 3


def test_closing_streams_forgets_the_connection() -> None:
    bounds = StreamBounds(max_total=10, max_per_connection=10)
    bounds.open("ipv6:[::1]:5")
    bounds.close("ipv6:[::1]:5")
    assert bounds.open_on("ipv6:[::1]:5") == 0
    assert bounds.total == 0


def test_the_owner_socket_counts_in_the_total_only() -> None:
    """Every client of the owner-only socket has the peer "unix:": they are one user."""
    bounds = StreamBounds(max_total=5, max_per_connection=1)
    for _ in range(5):
        assert bounds.open(OWNER_SOCKET_PEER) is None
    assert bounds.open(OWNER_SOCKET_PEER) is not None  # the total still holds
    for _ in range(5):
        bounds.close(OWNER_SOCKET_PEER)
    assert bounds.total == 0


# ---------------------------------------------------------------------------------------
# Peer credentials
# ---------------------------------------------------------------------------------------


def test_peer_credentials_are_the_connecting_process() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        credentials = peer_credentials(ours)
    assert (credentials.pid, credentials.uid, credentials.gid) == (
        os.getpid(),
        os.geteuid(),
        os.getegid(),
    )
    assert set(credentials.groups) >= set(os.getgroups()) - {os.getegid()}


def test_the_daemons_own_user_and_root_are_admin() -> None:
    roles = UnixRoles()
    for uid in {os.geteuid(), 0}:
        caller = roles.caller(PeerCredentials(1, uid, 1))
        assert caller.role is Role.ADMIN
        assert caller.rate is None
    assert not roles.others_allowed


def test_listed_uids_and_groups_get_their_role_and_the_highest_wins() -> None:
    rate = Rate(5.0, 10)
    roles = roles_from(
        {
            Role.AGENT: ([5001], [7000]),
            Role.READER: ([5002, 5001], [7001]),
            Role.ADMIN: ([], [7002]),
        },
        rate,
    )
    assert roles.others_allowed
    agent = roles.caller(PeerCredentials(1, 5001, 100))
    assert (agent.role, agent.rule, agent.rate) == (Role.AGENT, "auth.unix.agent_uids", rate)
    assert roles.caller(PeerCredentials(1, 5002, 100)).role is Role.READER
    by_group = roles.caller(PeerCredentials(1, 5003, 100, (7001,)))
    assert (by_group.role, by_group.rule) == (Role.READER, "auth.unix.reader_gids (7001)")
    assert roles.caller(PeerCredentials(1, 5003, 7000)).role is Role.AGENT  # primary gid
    admin = roles.caller(PeerCredentials(1, 5001, 100, (7002,)))
    assert (admin.role, admin.rate) == (Role.ADMIN, None)
    assert roles.caller(PeerCredentials(1, 5001, 1)).key == "uid:5001"


def test_an_unlisted_user_has_no_role_and_is_told_where_roles_come_from() -> None:
    caller = UnixRoles(uids={5001: Role.AGENT}).caller(PeerCredentials(1, 6000, 6000))
    assert caller.role is None
    assert caller.authenticated  # the kernel said who it is: PERMISSION_DENIED, not UNAUTH.
    assert caller.name == "uid 6000"
    assert "auth.unix" in caller.rule and "agent_uids" in caller.rule


def test_a_directory_closed_to_other_users_is_found() -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp and / let everyone traverse
    try:
        base.chmod(0o711)
        closed = base / "closed"
        (closed / "inner").mkdir(parents=True)
        closed.chmod(0o700)
        socket_path = closed / "inner" / "budgetd.sock"
        assert closed_directory(socket_path) == closed
        closed.chmod(0o710)  # the group may traverse: members of listed gids reach it
        assert closed_directory(socket_path) is None
    finally:
        shutil.rmtree(base)
