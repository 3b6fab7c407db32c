"""The gate on a real in-process server: roles per RPC, label scopes, rates, the caller
the service layer sees, over TCP with bearer tokens."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from budgetd.auth import Rate, Role, methods
from budgetd.auth import tokens as token_table
from budgetd.auth.gate import PUSHBACK_METADATA, RETRY_AFTER_METADATA, Identities, anonymous_tcp
from budgetd.core import Limits
from budgetd.v1 import budget_pb2 as pb
from tests.auth_support import bearer, token_file
from tests.service.gated import Gated, run_in, serve_gated

ACME = {"tenant": "acme", "agent": "a1", "thread": "t1"}
USAGE = pb.Usage(input_tokens=10, model="gpt-4o")
TOKENS: dict[str, dict[str, object]] = {
    "agent": {"name": "agents", "token": "tok-agent", "role": "agent"},
    "acme": {"name": "acme", "token": "tok-acme", "role": "agent", "scope": {"tenant": "acme"}},
    "reader": {"name": "dash", "token": "tok-reader", "role": "reader"},
    "admin": {"name": "ops", "token": "tok-admin", "role": "admin"},
    "slow": {
        "name": "slow",
        "token": "tok-slow",
        "role": "agent",
        "rate_per_second": 4,
        "rate_burst": 2,
    },
}


def _identities(tmp_path: Path, anonymous: Role | None = None) -> Identities:
    path = token_file(tmp_path / "tokens.toml", *TOKENS.values())
    table = token_table.load([path], None, Limits())
    return Identities(anonymous=anonymous_tcp(anonymous), tokens=table)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Gated]:
    yield from serve_gated(_identities(tmp_path))


def _md(who: str) -> Any:
    return bearer(str(TOKENS[who]["token"]))


def _code(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        failed: Any = error  # a grpc.Call too
        return failed.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    details: str
    trailing: dict[str, str]


def _error(call: Any) -> Refusal:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value  # a grpc.Call too
    trailing = {m.key: m.value for m in error.trailing_metadata() or ()}
    return Refusal(error.code(), error.details() or "", trailing)


def _consume(i: int, labels: dict[str, str] = ACME) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(request_id=f"c{i}", labels=labels, usage=USAGE)


# ---------------------------------------------------------------------------------------
# Who is calling
# ---------------------------------------------------------------------------------------


def test_without_credentials_only_health_and_reflection_answer(gated: Gated) -> None:
    channel = gated.channel()
    error = _error(lambda: gated.budget(channel).Consume(_consume(1), timeout=30))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in error.details
    assert 'auth.anonymous_tcp = "none"' in error.details
    for call in (
        lambda: gated.admin(channel).PutPolicy(pb.PutPolicyRequest(), timeout=30),
        lambda: gated.budget(channel).GetLedger(pb.GetLedgerRequest(key="daily"), timeout=30),
    ):
        assert _code(call) == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=30) is not None


def test_a_wrong_or_malformed_token_is_unauthenticated(gated: Gated) -> None:
    budget = gated.budget()
    wrong = _error(lambda: budget.Consume(_consume(1), metadata=bearer("nope"), timeout=30))
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details == ("the bearer token: no token file lists its sha256 (auth.token_files)")
    basic = (("authorization", "Basic dG9rLWFnZW50"),)
    malformed = _error(lambda: budget.Consume(_consume(1), metadata=basic, timeout=30))
    assert malformed.code == grpc.StatusCode.UNAUTHENTICATED
    assert "must be 'Bearer <token>'" in malformed.details
    lower = (("authorization", "bearer tok-agent"),)  # the scheme is case-insensitive
    assert budget.Consume(_consume(2), metadata=lower, timeout=30).ledgers


def _unary_methods() -> list[tuple[str, str]]:
    return [
        (service.name, method.name)
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    ]


@pytest.mark.parametrize("who", ["agent", "reader", "admin"])
def test_each_role_may_call_exactly_its_methods(gated: Gated, who: str) -> None:
    """Every unary RPC with an empty request: refused with PERMISSION_DENIED exactly
    when the role table says so (otherwise whatever the request deserves)."""
    channel = gated.channel()
    role = Role(str(TOKENS[who]["role"]))
    for service, name in _unary_methods():
        method = f"/budgetd.v1.{service}/{name}"
        descriptor = pb.DESCRIPTOR.services_by_name[service].methods_by_name[name]
        request = getattr(pb, descriptor.input_type.name)()
        call = channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda raw: raw,
        )
        code = _code(
            lambda call=call, request=request: call(request, metadata=_md(who), timeout=30)
        )
        allowed = role in methods.roles_for(method)
        assert (code == grpc.StatusCode.PERMISSION_DENIED) is not allowed, (method, code)
        assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), method


def test_a_refusal_names_the_role_its_rule_and_what_the_call_needs(gated: Gated) -> None:
    error = _error(
        lambda: gated.admin().PutPolicy(pb.PutPolicyRequest(), metadata=_md("agent"), timeout=30)
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.details.startswith("token 'agents' has the agent role (token file ")
    assert error.details.endswith(
        "); /budgetd.v1.BudgetAdminService/PutPolicy needs the admin role"
    )
    denied = _error(lambda: gated.budget().Consume(_consume(1), metadata=_md("reader"), timeout=30))
    assert "needs the agent or admin role" in denied.details


def test_an_admin_changes_policies_and_nobody_else_does(gated: Gated) -> None:
    policy = pb.Policy(name="zero", caps=[pb.Cap(dimension=pb.DIMENSION_TOTAL_TOKENS, limit=0)])
    for who in ("agent", "acme", "reader"):
        code = _code(
            lambda who=who: gated.admin().PutPolicy(
                pb.PutPolicyRequest(policy=policy), metadata=_md(who), timeout=30
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "zero" not in run_in(gated, gated.runtime.engine.policies_by_name)
    answer = gated.admin().PutPolicy(
        pb.PutPolicyRequest(policy=policy), metadata=_md("admin"), timeout=30
    )
    assert answer.created


def test_streams_are_gated_too(gated: Gated) -> None:
    budget = gated.budget()
    stream = budget.Subscribe(pb.SubscribeRequest(), metadata=_md("admin"), timeout=30)
    assert stream.initial_metadata() is not None  # open
    stream.cancel()
    refused = budget.Subscribe(pb.SubscribeRequest(), timeout=30)
    assert _code(lambda: next(refused)) == grpc.StatusCode.UNAUTHENTICATED
    requests = iter([pb.ConsumeStreamRequest(sequence=1, request=_consume(1))])
    answers = budget.ConsumeStream(requests, metadata=_md("reader"), timeout=30)
    assert _code(lambda: list(answers)) == grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------------------------
# Label scopes
# ---------------------------------------------------------------------------------------


def test_a_scoped_token_spends_only_inside_its_scope(gated: Gated) -> None:
    budget = gated.budget()
    assert budget.Consume(_consume(1), metadata=_md("acme"), timeout=30).ledgers
    before = run_in(gated, lambda: gated.runtime.engine.ledger_count)
    beta = {"tenant": "beta-corp", "agent": "a1", "thread": "t9"}
    lacking = {"agent": "a1", "thread": "t9"}
    calls = {
        "Consume": lambda labels: budget.Consume(_consume(2, labels), metadata=_md("acme")),
        "Check": lambda labels: budget.Check(
            pb.CheckRequest(labels=labels, estimate=USAGE), metadata=_md("acme")
        ),
        "Reserve": lambda labels: budget.Reserve(
            pb.ReserveRequest(request_id="r1", labels=labels, estimate=USAGE),
            metadata=_md("acme"),
        ),
        "OpenRun": lambda labels: budget.OpenRun(
            pb.OpenRunRequest(request_id="o1", run_id="run-1", labels=labels),
            metadata=_md("acme"),
        ),
    }
    for name, call in calls.items():
        for labels in (beta, lacking):
            error = _error(lambda call=call, labels=labels: call(labels))
            assert error.code == grpc.StatusCode.PERMISSION_DENIED, name
            assert "beta" not in error.details  # the rule, never the other tenant
            assert error.details.startswith("token 'acme' is scoped to tenant='acme' (token")
            assert error.details.endswith("): labels.tenant must be 'acme'")
    assert run_in(gated, lambda: gated.runtime.engine.ledger_count) == before
    assert budget.Consume(_consume(3, beta), metadata=_md("agent"), timeout=30)  # unscoped


def test_a_consume_stream_message_outside_the_scope_ends_the_stream(gated: Gated) -> None:
    beta = {"tenant": "beta", "agent": "a1", "thread": "t1"}
    sent: queue.Queue[pb.ConsumeStreamRequest | None] = queue.Queue()

    def requests() -> Iterator[pb.ConsumeStreamRequest]:
        while (item := sent.get()) is not None:
            yield item

    answers = gated.budget().ConsumeStream(requests(), metadata=_md("acme"), timeout=30)
    sent.put(pb.ConsumeStreamRequest(sequence=1, request=_consume(1)))
    first = next(answers)
    assert first.sequence == 1 and first.HasField("response")
    sent.put(pb.ConsumeStreamRequest(sequence=2, request=_consume(2, beta)))
    error = _error(lambda: next(answers))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert "request.labels.tenant must be 'acme'" in error.details
    assert "beta" not in error.details
    sent.put(None)
    ledger = run_in(gated, lambda: gated.runtime.engine.get_ledger("per-thread{thread=t1}", 0))
    assert ledger.totals.requests == 1


def test_the_service_layer_sees_the_caller_of_each_call(tmp_path: Path) -> None:
    for probe in serve_gated(_identities(tmp_path, anonymous=Role.READER), probe=True):
        channel = probe.channel()
        acme = probe.who(channel, _md("acme"))
        assert acme == {"name": "token 'acme'", "role": "agent", "scope": {"tenant": "acme"}}
        # The next call on the same connection has its own caller, not the last one's.
        assert probe.who(channel, _md("admin")) == {
            "name": "token 'ops'",
            "role": "admin",
            "scope": None,
        }
        assert probe.who(channel) == {
            "name": "an anonymous TCP caller",
            "role": "reader",
            "scope": None,
        }


# ---------------------------------------------------------------------------------------
# Rates
# ---------------------------------------------------------------------------------------


def test_a_token_over_its_rate_gets_resource_exhausted_with_a_retry_hint(gated: Gated) -> None:
    budget = gated.budget()
    for i in range(2):  # the burst
        budget.Consume(_consume(i), metadata=_md("slow"), timeout=30)
    error = _error(lambda: budget.Consume(_consume(9), metadata=_md("slow"), timeout=30))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details == (
        "rate limit of token 'slow': 4 requests/s, burst 2 (auth.rate_per_second); "
        "retry after 250 ms"
    )
    assert error.trailing[PUSHBACK_METADATA] == "250"
    assert error.trailing[RETRY_AFTER_METADATA] == "250"
    # Other identities have their own buckets; this one refills with time.
    assert budget.Consume(_consume(10), metadata=_md("agent"), timeout=30)
    gated.clock.advance(0.25)
    assert budget.Consume(_consume(11), metadata=_md("slow"), timeout=30)
    ledger = run_in(gated, lambda: gated.runtime.engine.get_ledger("per-thread{thread=t1}", 0))
    assert ledger.totals.requests == 4  # the refused call recorded nothing


def test_a_consume_stream_over_its_rate_waits_instead_of_failing(gated: Gated) -> None:
    requests = [pb.ConsumeStreamRequest(sequence=i, request=_consume(i)) for i in range(3)]
    answers = gated.budget().ConsumeStream(iter(requests), metadata=_md("slow"), timeout=30)
    first = next(answers)  # the burst of 2: the stream's opening and its first message
    gated.clock.advance(1.0)  # room for the other two: they are answered, not refused
    rest = list(answers)
    assert [a.sequence for a in [first, *rest]] == [0, 1, 2]
    assert all(a.HasField("response") for a in [first, *rest])


def test_rate_limited_identity_is_the_token_not_the_connection(gated: Gated) -> None:
    for i in range(2):
        gated.budget(gated.channel()).Consume(_consume(i), metadata=_md("slow"), timeout=30)
    fresh = gated.budget(gated.channel())
    assert _code(lambda: fresh.Consume(_consume(5), metadata=_md("slow"), timeout=30)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_a_limited_caller_keeps_its_own_rate(tmp_path: Path) -> None:
    """The anonymous role, when configured, is one identity with the configured rate."""
    path = token_file(tmp_path / "t.toml", TOKENS["admin"])
    identities = Identities(
        anonymous=anonymous_tcp(Role.AGENT, Rate(1.0, 1)),
        tokens=token_table.load([path], Rate(1.0, 1), Limits()),
    )
    for served in serve_gated(identities):
        budget = served.budget()
        budget.Consume(_consume(1), timeout=30)
        error = _error(lambda budget=budget: budget.Consume(_consume(2), timeout=30))
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit of an anonymous TCP caller" in error.details
        for i in range(5):  # admins are never limited
            budget.Consume(_consume(10 + i), metadata=_md("admin"), timeout=30)
