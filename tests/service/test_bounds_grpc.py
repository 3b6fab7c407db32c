"""The core's memory and work bounds as a client sees them, over a real grpc.aio server.

Goal: GetServerInfo tells the truth about the idempotency memory (its effective window,
the ids remembered and the configured bounds): at the bound the oldest id's retry is
counted anew while the newest is replayed, and the window reported is the age of the
oldest id still remembered. The label-byte bound refuses a new ledger with
RESOURCE_EXHAUSTED naming `max_label_bytes` and changes nothing. ListLedgers and
ListRuns answer empty pages with a token when their scan bound is reached, and the SDK
and budgetctl follow such tokens to the complete list.

Method: in-process servers (tests/service/support.py) with tight limits and the test's
manual clock; the engine is read on the server's loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest

from budgetd.core import Limits, Policy
from budgetd.v1 import budget_pb2 as pb
from budgetd_client import BudgetClient, LedgerState
from budgetd_client.ctl import Exit, main
from tests.service.support import Served

SERVER = Callable[..., Served]
USER = Policy.from_mapping({"name": "per-user", "per": ["user"], "evictable": False})
CAPPED = Policy.from_mapping(
    {"name": "per-user", "per": ["user"], "caps": {"total_tokens": 100}, "evictable": False}
)


def consume(
    served: Served, request_id: str, user: str = "u", tokens: int = 1
) -> pb.ConsumeResponse:
    request = pb.ConsumeRequest(
        request_id=request_id, labels={"user": user}, usage=pb.Usage(input_tokens=tokens)
    )
    response: pb.ConsumeResponse = served.budget.Consume(request)
    return response


def info(served: Served) -> pb.GetServerInfoResponse:
    response: pb.GetServerInfoResponse = served.admin.GetServerInfo(pb.GetServerInfoRequest())
    return response


def requests_of(served: Served, user: str = "u") -> int:
    key = f"per-user{{user={user}}}"
    ledger = served.budget.GetLedger(pb.GetLedgerRequest(key=key)).ledger
    return int(ledger.totals.requests)


def test_server_info_shows_the_idempotency_window_at_its_bound(make_served: SERVER) -> None:
    served = make_served(policies=(USER,), limits=Limits(idempotency_max_entries=4))
    assert info(served).idempotency_window.ToTimedelta().total_seconds() == 0
    for i in range(5):  # c0 at START ... c4 at START + 40: c0 is forgotten
        consume(served, f"c{i}")
        served.clock.advance(10)
    now = info(served)
    assert (now.remembered_requests, now.remembered_requests_max) == (4, 4)
    assert now.idempotency_window.ToTimedelta().total_seconds() == 40.0  # c1's age
    assert now.idempotency_max_age.ToTimedelta().total_seconds() == 86_400
    assert 0 < now.remembered_request_bytes <= now.remembered_request_bytes_max
    assert now.remembered_request_bytes_max == Limits().idempotency_max_bytes
    assert consume(served, "c4").replayed and consume(served, "c1").replayed
    assert requests_of(served) == 5
    assert not consume(served, "c0").replayed  # older than the window: counted anew
    assert requests_of(served) == 6
    assert info(served).idempotency_window.ToTimedelta().total_seconds() == 30.0  # c2's


def test_the_label_byte_bound_is_resource_exhausted_and_changes_nothing(
    make_served: SERVER,
) -> None:
    served = make_served(policies=(USER,), limits=Limits(max_label_bytes=300))
    consume(served, "c1", user="a" * 140)  # "per-user{user=}" + 140, and the value again: 295
    before = info(served)
    assert (before.label_bytes, before.label_bytes_max, before.ledgers) == (295, 300, 1)
    with pytest.raises(grpc.RpcError) as raised:
        consume(served, "c2", user="bb")
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_label_bytes" in (raised.value.details() or "")
    after = info(served)
    assert (after.label_bytes, after.ledgers, after.last_event_seq) == (
        295,
        1,
        before.last_event_seq,
    )


def few_matches(make_served: SERVER) -> Served:
    """25 ledgers, scanned 4 a call; only the 23rd is at WARNING or worse."""
    served = make_served(policies=(CAPPED,), limits=Limits(list_scan_per_page=4))
    for i in range(25):
        consume(served, f"c{i}", user=f"u{i:02d}", tokens=90 if i == 22 else 1)
    return served


def test_list_ledgers_answers_empty_pages_with_a_token_until_the_scan_ends(
    make_served: SERVER,
) -> None:
    served = few_matches(make_served)
    request = pb.ListLedgersRequest(min_state=pb.LEDGER_STATE_WARNING, page_size=10)
    sizes: list[int] = []
    while True:
        page = served.budget.ListLedgers(request)
        sizes.append(len(page.ledgers))
        assert page.next_page_token.isascii()
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert sizes == [0, 0, 0, 0, 0, 1, 0]  # 25 ledgers, 4 a call


def test_the_sdk_and_budgetctl_follow_tokens_past_empty_pages(
    make_served: SERVER, capsys: pytest.CaptureFixture[str]
) -> None:
    served = few_matches(make_served)
    with BudgetClient(served.target) as client:
        found = [status.key for status in client.list_ledgers(min_state=LedgerState.warning)]
    assert found == ["per-user{user=u22}"]
    capsys.readouterr()
    code = main(["--target", served.target, "status", "--min-state", "warning", "--json"])
    page = json.loads(capsys.readouterr().out)
    assert code == Exit.OK
    assert [ledger["key"] for ledger in page["ledgers"]] == ["per-user{user=u22}"]
    assert page["next_page_token"] == ""


def test_list_runs_answers_empty_pages_with_a_token(make_served: SERVER) -> None:
    served = make_served(policies=(USER,), limits=Limits(list_scan_per_page=3))
    for i in range(7):
        labels = {"user": "wanted" if i == 5 else "other"}
        served.budget.OpenRun(
            pb.OpenRunRequest(request_id=f"o{i}", labels=labels, run_id=f"run-{i}")
        )
    request = pb.ListRunsRequest(selector={"user": "wanted"}, page_size=10)
    found: list[list[str]] = []
    while True:
        page = served.budget.ListRuns(request)
        found.append([run.run_id for run in page.runs])
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert found == [[], ["run-5"], []]
