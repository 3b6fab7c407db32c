"""A scoped token sees only what is inside its scope, through the real gated server:
ledgers, runs, reservations, events and policies of another tenant answer exactly as
missing ones would (NOT_FOUND, empty pages, no events), and its own are served as to
anyone else. An unscoped token sees everything."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd import service
from budgetd.auth import tokens as token_table
from budgetd.auth.caller import UNRESTRICTED, Caller, Role
from budgetd.auth.gate import Identities, anonymous_tcp
from budgetd.core import Engine, Limits, Policy
from budgetd.core import events as ev
from budgetd.v1 import budget_pb2 as pb
from tests.auth_support import bearer, token_file
from tests.service.gated import Gated, serve_gated

TOKENS: dict[str, dict[str, object]] = {
    "acme": {"name": "acme", "token": "tok-acme", "role": "agent", "scope": {"tenant": "acme"}},
    "beta": {"name": "beta", "token": "tok-beta", "role": "agent", "scope": {"tenant": "beta"}},
    "acme-reader": {
        "name": "acme-dash",
        "token": "tok-acme-reader",
        "role": "reader",
        "scope": {"tenant": "acme"},
    },
    "admin": {"name": "ops", "token": "tok-admin", "role": "admin"},
}
POLICIES = (
    Policy.from_mapping({"name": "per-tenant", "per": ["tenant"], "caps": {"total_tokens": 10**9}}),
    Policy.from_mapping(
        {"name": "beta-only", "match": {"tenant": "beta"}, "caps": {"total_tokens": 10**9}}
    ),
    Policy.from_mapping({"name": "everyone", "caps": {"total_tokens": 10**9}}),
)
USAGE = pb.Usage(input_tokens=10, model="gpt-4o")


def _md(who: str) -> Any:
    return bearer(str(TOKENS[who]["token"]))


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Gated]:
    path = token_file(tmp_path / "tokens.toml", *TOKENS.values())
    identities = Identities(
        anonymous=anonymous_tcp(None), tokens=token_table.load([path], None, Limits())
    )
    yield from serve_gated(identities, policies=POLICIES)


def _labels(tenant: str) -> dict[str, str]:
    return {"tenant": tenant, "agent": "a1", "thread": f"t-{tenant}"}


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    failed: Any = raised.value
    return failed.code()  # type: ignore[no-any-return]


def _spend(gated: Gated, who: str, i: int = 0) -> None:
    gated.budget().Consume(
        pb.ConsumeRequest(request_id=f"{who}-{i}", labels=_labels(who), usage=USAGE),
        metadata=_md(who),
        timeout=30,
    )


def test_another_tenants_ledger_answers_as_a_missing_one(gated: Gated) -> None:
    _spend(gated, "acme")
    _spend(gated, "beta")
    budget = gated.budget()
    own = budget.GetLedger(
        pb.GetLedgerRequest(key="per-tenant{tenant=acme}"), metadata=_md("acme"), timeout=30
    )
    assert own.ledger.totals.input_tokens == 10
    for key in ("per-tenant{tenant=beta}", "beta-only", "everyone"):
        hidden = lambda key=key: budget.GetLedger(  # noqa: E731
            pb.GetLedgerRequest(key=key), metadata=_md("acme"), timeout=30
        )
        assert _code(hidden) is grpc.StatusCode.NOT_FOUND, key
    # The admin (unscoped) reads them all.
    for key in ("per-tenant{tenant=beta}", "beta-only", "everyone"):
        budget.GetLedger(pb.GetLedgerRequest(key=key), metadata=_md("admin"), timeout=30)


def test_a_hidden_ledger_and_a_missing_one_get_the_same_answer(gated: Gated) -> None:
    _spend(gated, "beta")
    budget = gated.budget()

    def details(key: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as raised:
            budget.GetLedger(pb.GetLedgerRequest(key=key), metadata=_md("acme"), timeout=30)
        error: Any = raised.value
        return error.code(), (error.details() or "").replace(key, "KEY")

    assert details("per-tenant{tenant=beta}") == details("per-tenant{tenant=gamma}")


def test_lists_hold_only_the_callers_tenant(gated: Gated) -> None:
    for i in range(3):
        _spend(gated, "acme", i)
        _spend(gated, "beta", i)
    budget = gated.budget()
    listed = budget.ListLedgers(pb.ListLedgersRequest(), metadata=_md("acme"), timeout=30)
    assert [s.key for s in listed.ledgers] == ["per-tenant{tenant=acme}"]
    asked_for_beta = pb.ListLedgersRequest(selector={"tenant": "beta"})
    assert not budget.ListLedgers(asked_for_beta, metadata=_md("acme"), timeout=30).ledgers
    everything = budget.ListLedgers(pb.ListLedgersRequest(), metadata=_md("admin"), timeout=30)
    assert {"per-tenant{tenant=beta}", "beta-only", "everyone"} <= {
        s.key for s in everything.ledgers
    }
    reader = budget.ListLedgers(pb.ListLedgersRequest(), metadata=_md("acme-reader"), timeout=30)
    assert [s.key for s in reader.ledgers] == ["per-tenant{tenant=acme}"]


def test_runs_and_reservations_of_another_tenant_answer_as_missing(gated: Gated) -> None:
    budget = gated.budget()
    budget.OpenRun(
        pb.OpenRunRequest(request_id="o1", run_id="beta-run", labels=_labels("beta")),
        metadata=_md("beta"),
        timeout=30,
    )
    held = budget.Reserve(
        pb.ReserveRequest(request_id="r1", labels=_labels("beta"), estimate=USAGE),
        metadata=_md("beta"),
        timeout=30,
    )
    acme = _md("acme")
    runs = budget.ListRuns(pb.ListRunsRequest(), metadata=acme, timeout=30)
    assert not runs.runs
    assert [r.run_id for r in budget.ListRuns(pb.ListRunsRequest(), metadata=_md("beta")).runs] == [
        "beta-run"
    ]
    attempts = {
        "Heartbeat": lambda: budget.Heartbeat(
            pb.HeartbeatRequest(run_id="beta-run"), metadata=acme, timeout=30
        ),
        "CloseRun": lambda: budget.CloseRun(
            pb.CloseRunRequest(run_id="beta-run", request_id="x1"), metadata=acme, timeout=30
        ),
        "Consume into the run": lambda: budget.Consume(
            pb.ConsumeRequest(
                request_id="x2", labels=_labels("acme"), usage=USAGE, run_id="beta-run"
            ),
            metadata=acme,
            timeout=30,
        ),
        "Commit": lambda: budget.Commit(
            pb.CommitRequest(reservation_id=held.reservation_id, actual=USAGE, request_id="x3"),
            metadata=acme,
            timeout=30,
        ),
        "Release": lambda: budget.Release(
            pb.ReleaseRequest(reservation_id=held.reservation_id, request_id="x4"),
            metadata=acme,
            timeout=30,
        ),
    }
    for name, attempt in attempts.items():
        assert _code(attempt) is grpc.StatusCode.NOT_FOUND, name
    # Nothing of beta's changed: its run is open, its hold still commits.
    assert budget.Heartbeat(pb.HeartbeatRequest(run_id="beta-run"), metadata=_md("beta"))
    done = budget.Commit(
        pb.CommitRequest(reservation_id=held.reservation_id, actual=USAGE, request_id="c1"),
        metadata=_md("beta"),
        timeout=30,
    )
    assert not done.replayed


def test_a_scoped_subscriber_gets_only_its_tenants_events(gated: Gated) -> None:
    received: queue.Queue[pb.Event] = queue.Queue()
    stream: Any = gated.budget().Subscribe(
        pb.SubscribeRequest(kinds=[pb.EVENT_KIND_USAGE_RECORDED, pb.EVENT_KIND_POLICY_CHANGED]),
        metadata=_md("acme-reader"),
        timeout=60,
    )
    stream.initial_metadata()  # subscribed: events from here on are delivered

    def read() -> None:
        try:
            for item in stream:
                received.put(item.event)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _spend(gated, "beta")
    gated.admin().PutPolicy(
        pb.PutPolicyRequest(
            policy=pb.Policy(
                name="later",
                per=["thread"],
                caps=[pb.Cap(dimension=pb.DIMENSION_TOTAL_TOKENS, limit=5)],
            )
        ),
        metadata=_md("admin"),
        timeout=30,
    )
    _spend(gated, "acme")  # the marker: everything before it has been filtered
    first = received.get(timeout=30)
    assert first.WhichOneof("payload") == "usage_recorded"
    assert first.labels["tenant"] == "acme"
    stream.cancel()
    reader.join(timeout=30)
    assert received.empty()


def test_a_scoped_caller_lists_only_policies_that_can_apply_to_it(gated: Gated) -> None:
    admin = gated.admin()
    scoped = admin.ListPolicies(pb.ListPoliciesRequest(), metadata=_md("acme-reader"), timeout=30)
    assert "beta-only" not in [p.name for p in scoped.policies]
    assert {"per-tenant", "everyone"} <= {p.name for p in scoped.policies}
    everything = admin.ListPolicies(pb.ListPoliciesRequest(), metadata=_md("admin"), timeout=30)
    assert "beta-only" in [p.name for p in everything.policies]


@pytest.mark.parametrize(
    "kinds",
    [
        [pb.EVENT_KIND_POLICY_CHANGED],
        [pb.EVENT_KIND_POLICY_CHANGED, pb.EVENT_KIND_GAP],
        [],
    ],
)
def test_a_scoped_subscription_never_passes_a_policy_change(kinds: list[Any]) -> None:
    """Asking only for policy changes must not widen to "every kind" once they are
    taken out of a scoped caller's filter."""
    scoped = Caller("token 'acme'", Role.READER, "test", (("tenant", "acme"),))
    engine = Engine(POLICIES)
    request = pb.SubscribeRequest(kinds=kinds)
    change = ev.PolicyChanged(at=0.0, name="beta-secret", deleted=False)
    assert not service._event_filter(request, engine, scoped).passes(change, {})
    assert service._event_filter(request, engine, UNRESTRICTED).passes(change, {})
