"""A scoped token sees only what is inside its scope, through the real gated server:
ledgers, runs, reservations, events and policies of another tenant answer exactly as
missing ones would (NOT_FOUND, empty pages, no events), and its own are served as to
anyone else. An unscoped token sees everything."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
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
    # Usage naming a run that is not open is recorded, attributed to no run; so is usage
    # naming another tenant's run: acme's ledger counts it, beta's run does not.
    budget.Consume(
        pb.ConsumeRequest(request_id="x2", labels=_labels("acme"), usage=USAGE, run_id="beta-run"),
        metadata=acme,
        timeout=30,
    )
    acme_ledger = budget.GetLedger(
        pb.GetLedgerRequest(key="per-tenant{tenant=acme}"), metadata=acme, timeout=30
    )
    assert acme_ledger.ledger.totals.input_tokens == 10
    beta_runs = budget.ListRuns(pb.ListRunsRequest(), metadata=_md("beta"), timeout=30).runs
    assert [r.totals.input_tokens for r in beta_runs] == [0]
    # Nothing of beta's changed: its run is open, its hold still commits.
    assert budget.Heartbeat(pb.HeartbeatRequest(run_id="beta-run"), metadata=_md("beta"))
    done = budget.Commit(
        pb.CommitRequest(reservation_id=held.reservation_id, actual=USAGE, request_id="c1"),
        metadata=_md("beta"),
        timeout=30,
    )
    assert not done.replayed


def _details(call: Callable[[str], Any], name: str) -> tuple[grpc.StatusCode, str]:
    """The status of `call(name)`, its details with the name itself blanked out."""
    with pytest.raises(grpc.RpcError) as raised:
        call(name)
    error: Any = raised.value
    return error.code(), (error.details() or "").replace(name, "ID")


def test_another_tenants_reservation_answers_word_for_word_as_a_missing_one(
    gated: Gated,
) -> None:
    budget, acme = gated.budget(), _md("acme")
    held = budget.Reserve(
        pb.ReserveRequest(request_id="r1", labels=_labels("beta"), estimate=USAGE),
        metadata=_md("beta"),
        timeout=30,
    )

    def commit(rid: str) -> Any:
        request = pb.CommitRequest(reservation_id=rid, actual=USAGE, request_id=f"c-{rid}")
        return budget.Commit(request, metadata=acme, timeout=30)

    def release(rid: str) -> Any:
        request = pb.ReleaseRequest(reservation_id=rid, request_id=f"l-{rid}")
        return budget.Release(request, metadata=acme, timeout=30)

    for call in (commit, release):
        hidden = _details(call, held.reservation_id)
        assert hidden[0] is grpc.StatusCode.NOT_FOUND
        assert hidden == _details(call, "never-granted")


def test_another_tenants_ended_run_answers_as_one_never_opened(gated: Gated) -> None:
    """No hint of how or when another tenant's run ended: as an id never seen."""
    budget, acme = gated.budget(), _md("acme")
    budget.OpenRun(
        pb.OpenRunRequest(request_id="o1", run_id="beta-run", labels=_labels("beta")),
        metadata=_md("beta"),
        timeout=30,
    )
    budget.CloseRun(
        pb.CloseRunRequest(run_id="beta-run", request_id="c1"), metadata=_md("beta"), timeout=30
    )
    calls: dict[str, Callable[[str], Any]] = {
        "Heartbeat": lambda run: budget.Heartbeat(
            pb.HeartbeatRequest(run_id=run), metadata=acme, timeout=30
        ),
        "CloseRun": lambda run: budget.CloseRun(
            pb.CloseRunRequest(run_id=run, request_id=f"x-{run}"), metadata=acme, timeout=30
        ),
        "Check": lambda run: budget.Check(
            pb.CheckRequest(labels=_labels("acme"), estimate=USAGE, run_id=run),
            metadata=acme,
            timeout=30,
        ),
        "Reserve": lambda run: budget.Reserve(
            pb.ReserveRequest(
                request_id=f"r-{run}", labels=_labels("acme"), estimate=USAGE, run_id=run
            ),
            metadata=acme,
            timeout=30,
        ),
    }
    for name, call in calls.items():
        hidden = _details(call, "beta-run")
        assert hidden[0] is grpc.StatusCode.NOT_FOUND, name
        assert "ended" not in hidden[1], name
        assert hidden == _details(call, "never-opened"), name
    # Its own tenant still learns how the run ended.
    own = _details(
        lambda run: budget.Heartbeat(
            pb.HeartbeatRequest(run_id=run), metadata=_md("beta"), timeout=30
        ),
        "beta-run",
    )
    assert own[0] is grpc.StatusCode.NOT_FOUND and "ended (closed)" in own[1]


def test_a_run_listing_page_token_never_names_another_tenants_run(tmp_path: Path) -> None:
    """A scan looks at two runs at most here, so it stops on beta's runs: acme's page
    token is then a handle, never one of beta's ids, and the listing still ends with
    every acme run exactly once."""
    path = token_file(tmp_path / "tokens.toml", *TOKENS.values())
    identities = Identities(
        anonymous=anonymous_tcp(None), tokens=token_table.load([path], None, Limits())
    )
    for gated in serve_gated(
        identities, policies=POLICIES, engine_limits=Limits(list_scan_per_page=2)
    ):
        budget = gated.budget()
        opened = {"beta": [f"b-{i}" for i in range(5)], "acme": ["a-0", "c-0", "c-1"]}
        for tenant, run_ids in opened.items():
            for run_id in run_ids:
                budget.OpenRun(
                    pb.OpenRunRequest(
                        request_id=f"o-{run_id}", run_id=run_id, labels=_labels(tenant)
                    ),
                    metadata=_md(tenant),
                    timeout=30,
                )
        listed: list[str] = []
        tokens: list[str] = []
        token = ""
        while True:
            page = budget.ListRuns(
                pb.ListRunsRequest(page_size=10, page_token=token), metadata=_md("acme")
            )
            listed += [r.run_id for r in page.runs]
            token = page.next_page_token
            if not token:
                break
            tokens.append(token)
        assert listed == opened["acme"]
        assert tokens and not any(t in opened["beta"] for t in tokens), tokens
        assert any(t.startswith("cursor ") for t in tokens), tokens
        forged = pb.ListRunsRequest(page_token="cursor not-one-we-gave")
        with pytest.raises(grpc.RpcError) as raised:
            budget.ListRuns(forged, metadata=_md("acme"))
        refused: Any = raised.value
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (refused.details() or "")


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


def test_a_scoped_callers_batch_holds_each_operation_to_its_scope(gated: Gated) -> None:
    """An operation outside the scope fails alone (PERMISSION_DENIED naming its place and
    the caller's own rule); the others are applied."""
    ops = [
        pb.BatchOperation(
            consume=pb.ConsumeRequest(request_id=f"batch-{i}", labels=_labels(t), usage=USAGE)
        )
        for i, t in enumerate(("acme", "beta", "acme"))
    ]
    answer = gated.budget().Batch(pb.BatchRequest(operations=ops), metadata=_md("acme"), timeout=30)
    kinds = [r.WhichOneof("result") for r in answer.results]
    assert kinds == ["consume", "error", "consume"]
    denied = answer.results[1].error
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "operations[1].consume.labels.tenant must be 'acme'" in denied.message
    assert "beta" not in denied.message
    admin = gated.budget().GetLedger(
        pb.GetLedgerRequest(key="per-tenant{tenant=acme}"), metadata=_md("admin"), timeout=30
    )
    assert admin.ledger.totals.input_tokens == 20
    with pytest.raises(grpc.RpcError):  # nothing of the refused one reached beta's ledger
        gated.budget().GetLedger(
            pb.GetLedgerRequest(key="per-tenant{tenant=beta}"), metadata=_md("admin"), timeout=30
        )
