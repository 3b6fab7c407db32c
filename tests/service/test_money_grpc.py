"""Money that is right, over gRPC: what the wire says about prices, ids, resets, labels.

Goal: through a real in-process grpc.aio server (journal mode), a reused request_id with
another body is ALREADY_EXISTS; an unpriced estimate is denied with reason UNPRICED and
the model; blockers and dimensions carry `resets_at`; threshold events carry percent
used and remaining and reach a subscriber that selects on a policy's match label;
cache-write, reasoning and microsecond latency come back in totals; the new policy
fields round-trip through PutPolicy and ListPolicies; the SDK's BudgetExhausted exposes
the reset time and a denial is asked once, never retried.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from budgetd.core import Policy
from budgetd.v1 import budget_pb2 as pb
from budgetd_client import BudgetClient, BudgetExhausted, Usage
from tests.service.support import START, Served
from tests.service.test_streams_and_admin import Collector, wait_subscribed

DAILY = Policy.from_mapping(
    {
        "name": "daily",
        "match": {"tenant": "acme"},
        "per": ["user"],
        "caps": {"total_tokens": 1000, "cost_usd": "5"},
        "window": "calendar",
    }
)
LABELS = {"tenant": "acme", "user": "u"}
MIDNIGHT = datetime.fromtimestamp(START, UTC).replace(hour=0, minute=0, second=0).timestamp()


def consume(request_id: str, usage: pb.Usage) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(request_id=request_id, labels=LABELS, usage=usage)


def test_a_reused_request_id_with_another_body_is_already_exists(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=(DAILY,))
    first = served.budget.Consume(consume("c1", pb.Usage(input_tokens=10, model="gpt-4o")))
    again = served.budget.Consume(consume("c1", pb.Usage(input_tokens=10, model="gpt-4o")))
    assert again.replayed and again.ledgers == first.ledgers
    with pytest.raises(grpc.RpcError) as raised:
        served.budget.Consume(consume("c1", pb.Usage(input_tokens=11, model="gpt-4o")))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already used for a different consume request" in (raised.value.details() or "")
    status = served.budget.GetLedger(pb.GetLedgerRequest(key="daily{user=u}")).ledger
    assert status.totals.total_tokens == 10  # the refused call changed nothing


def test_an_unpriced_estimate_is_denied_with_its_reason_and_model(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=(DAILY,))
    estimate = pb.Usage(input_tokens=100, model="no-such-model-7")
    answer = served.budget.Reserve(
        pb.ReserveRequest(request_id="r", labels=LABELS, estimate=estimate)
    )
    assert answer.decision == pb.DECISION_DENY
    (blocker,) = answer.blockers
    assert (blocker.reason, blocker.model, blocker.dimension) == (
        pb.BLOCK_REASON_UNPRICED,
        "no-such-model-7",
        pb.DIMENSION_COST_MICRO_USD,
    )
    assert not blocker.HasField("resets_at")
    checked = served.budget.Check(pb.CheckRequest(labels=LABELS, estimate=estimate))
    assert checked.decision == pb.DECISION_DENY and not checked.cost_known


def test_blockers_and_dimensions_say_when_the_amount_comes_back(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=(DAILY,))
    served.budget.Consume(consume("c", pb.Usage(input_tokens=1000, model="gpt-4o")))
    checked = served.budget.Check(
        pb.CheckRequest(labels=LABELS, estimate=pb.Usage(input_tokens=1, model="gpt-4o"))
    )
    (blocker,) = checked.blockers
    assert blocker.reason == pb.BLOCK_REASON_OVER_CAP
    assert blocker.resets_at.ToSeconds() == MIDNIGHT + 86_400
    tokens = checked.ledgers[0].dimensions[0]
    assert tokens.dimension == pb.DIMENSION_TOTAL_TOKENS
    assert tokens.resets_at.ToSeconds() == MIDNIGHT + 86_400


def test_threshold_events_reach_a_selector_on_a_match_label_with_what_is_left(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=(DAILY,))
    watcher = Collector(
        served,
        pb.SubscribeRequest(selector={"tenant": "acme"}, kinds=[pb.EVENT_KIND_THRESHOLD_CROSSED]),
    )
    wait_subscribed(served)
    served.budget.Consume(consume("c", pb.Usage(input_tokens=800, model="gpt-4o")))
    (event,) = watcher.take(1)
    crossing = event.threshold_crossed.crossing
    assert (crossing.percent, crossing.percent_used, crossing.remaining) == (75, 80, 200)
    assert dict(event.labels) == {"tenant": "acme", "user": "u"}
    status = served.budget.GetLedger(pb.GetLedgerRequest(key="daily{user=u}")).ledger
    assert dict(status.labels) == dict(event.labels)
    watcher.cancel()


def test_cache_write_reasoning_and_microsecond_latency_come_back_in_totals(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=(DAILY,))
    usage = pb.Usage(
        input_tokens=100,
        output_tokens=50,
        cached_input_tokens=20,
        cache_write_input_tokens=30,
        reasoning_tokens=40,
        latency_us=150_500,
        model="gpt-4o",
    )
    served.budget.Consume(consume("a", usage))
    served.budget.Consume(consume("b", pb.Usage(input_tokens=1, latency_ms=100)))  # older clients
    totals = served.budget.GetLedger(pb.GetLedgerRequest(key="daily{user=u}")).ledger.totals
    assert (totals.cache_write_input_tokens, totals.reasoning_tokens) == (30, 40)
    assert (totals.latency_us_sum, totals.latency_ms_sum, totals.latency_samples) == (
        250_500,
        250,
        2,
    )
    assert totals.unpriced_requests == 1 and totals.unpriced_tokens == 1
    for bad, field in (
        (pb.Usage(input_tokens=10, reasoning_tokens=1), "usage.reasoning_tokens"),
        (pb.Usage(input_tokens=10, latency_ms=-1), "usage.latency_ms"),
        (pb.Usage(input_tokens=10, latency_us=86_400_000_001), "usage.latency_us"),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            served.budget.Consume(consume(f"bad-{field}", bad))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (raised.value.details() or "").startswith(field)


def test_the_new_policy_fields_round_trip_through_the_admin_service(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=(DAILY,))
    sent = pb.Policy(
        name="per-user",
        per=["tenant", "user"],
        caps=[pb.Cap(dimension=pb.DIMENSION_WALL_CLOCK_MS, limit=8 * 3_600_000)],
        window=pb.Window(calendar=pb.Window.Calendar(unit=pb.CALENDAR_UNIT_DAY)),
        unpriced=pb.UNPRICED_ALLOW,
        missing={"user": "anonymous"},
        idle_ttl=Duration(seconds=86_400),
    )
    served.admin.PutPolicy(pb.PutPolicyRequest(policy=sent))
    listed = {p.name: p for p in served.admin.ListPolicies(pb.ListPoliciesRequest()).policies}
    back = listed["per-user"]
    assert (back.unpriced, dict(back.missing), back.idle_ttl.seconds) == (
        pb.UNPRICED_ALLOW,
        {"user": "anonymous"},
        86_400,
    )
    assert [c.dimension for c in back.caps] == [pb.DIMENSION_WALL_CLOCK_MS]
    with pytest.raises(grpc.RpcError) as raised:
        served.admin.PutPolicy(
            pb.PutPolicyRequest(
                policy=pb.Policy(
                    name="bad",
                    window=pb.Window(fixed=pb.Window.Fixed(duration=Duration(seconds=2**63 - 1))),
                )
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("policy.window.duration")


def test_the_sdk_exposes_the_reset_time_and_asks_a_denial_once(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(policies=(DAILY,))
    served.budget.Consume(consume("c", pb.Usage(input_tokens=1000, model="gpt-4o")))
    engine = served.runtime.engine
    asked: list[str] = []
    reserve = engine.reserve

    def counted(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("request_id", ""))
        return reserve(*args, **kwargs)

    served.in_loop(lambda: setattr(engine, "reserve", counted))
    with BudgetClient(served.target) as client:
        with pytest.raises(BudgetExhausted) as raised:
            client.reserve(LABELS, Usage(input_tokens=10, model="gpt-4o"))
        assert raised.value.resets_at == datetime.fromtimestamp(MIDNIGHT + 86_400, UTC)
        assert raised.value.blockers[0].resets_at == raised.value.resets_at
        with pytest.raises(BudgetExhausted) as unpriced:
            client.reserve({"tenant": "acme", "user": "v"}, Usage(10, model="no-such-model-7"))
        assert unpriced.value.resets_at is None and unpriced.value.blockers[0].unpriced
        assert "no-such-model-7" in str(unpriced.value)
    # One Reserve reached the engine per call: a denial is an answer, never retried.
    assert len(asked) == 2 and len(set(asked)) == 2


def test_get_price_explains_how_a_model_resolves_and_lists_the_table(served: Served) -> None:
    exact = served.budget.GetPrice(pb.GetPriceRequest(model="openai/GPT-4o"))
    assert (exact.normalized, exact.reason, exact.price.model) == ("gpt-4o", "exact", "gpt-4o")
    assert exact.price.input_micro_usd > 0 and exact.price.source.startswith("default")
    dated = served.budget.GetPrice(pb.GetPriceRequest(model="gpt-4o-2024-08-06"))
    assert dated.price.model == "gpt-4o" and dated.reason.startswith("version suffix")
    unknown = served.budget.GetPrice(pb.GetPriceRequest(model="no-such-model-7"))
    assert not unknown.HasField("price") and unknown.reason.startswith("unknown")
    pro = served.budget.GetPrice(pb.GetPriceRequest(model="o1-pro"))
    assert pro.price.model != "o1"  # its own entry, or unknown: never the base model
    table = served.budget.GetPrice(pb.GetPriceRequest()).table
    assert len(table) > 50 and [p.model for p in table] == sorted(p.model for p in table)
    with pytest.raises(grpc.RpcError) as raised:
        served.budget.GetPrice(pb.GetPriceRequest(model="m" * 257))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
