"""Every edge rule over the wire, the error table's corners, reflection and big numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from budgetd.core import Engine, Limits, Policy
from budgetd.v1 import budget_pb2 as pb
from tests.service.support import Served, serve

THREAD = {"agent": "writer", "thread": "t1"}
OK_USAGE = pb.Usage(input_tokens=10, model="gpt-4o")


def failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details() or ""


def with_usage(**fields: Any) -> pb.ConsumeRequest:
    return pb.ConsumeRequest(request_id="c", labels=THREAD, usage=pb.Usage(**fields))


BAD_CONSUMES = [
    (with_usage(output_tokens=-5), "usage.output_tokens"),
    (with_usage(cost_micro_usd=-1), "usage.cost_micro_usd"),
    (with_usage(cost_micro_usd=10**15 + 1), "usage.cost_micro_usd"),
    (with_usage(latency_ms=-1), "usage.latency_ms"),
    (with_usage(latency_ms=86_400_001), "usage.latency_ms"),
    (with_usage(model="m" * 257), "usage.model"),
    (with_usage(provider="p" * 257), "usage.provider"),
    (pb.ConsumeRequest(request_id="c", labels={"k" * 65: "v"}), "labels["),
    (pb.ConsumeRequest(request_id="c", labels={"": "v"}), "labels["),
    (pb.ConsumeRequest(request_id="x" * 129, labels=THREAD), "request_id"),
    (pb.ConsumeRequest(request_id="é", labels=THREAD), "request_id"),
    (pb.ConsumeRequest(request_id="c", labels=THREAD, run_id="has space"), "run_id"),
]


@pytest.mark.parametrize(("request_", "field"), BAD_CONSUMES, ids=[f for _, f in BAD_CONSUMES])
def test_every_usage_label_and_id_rule_is_invalid_argument(
    served: Served, request_: pb.ConsumeRequest, field: str
) -> None:
    code, details = failure(lambda: served.budget.Consume(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field), details
    assert served.in_loop(lambda: served.runtime.engine.ledger_count) == 0


def test_run_and_listing_rules_are_invalid_argument(served: Served) -> None:
    budget = served.budget
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: budget.OpenRun(pb.OpenRunRequest(request_id="o", labels=THREAD)), "run_id"),
        (
            lambda: budget.OpenRun(
                pb.OpenRunRequest(
                    request_id="o", labels=THREAD, run_id="r", ttl=Duration(seconds=3601)
                )
            ),
            "ttl",
        ),
        (lambda: budget.Heartbeat(pb.HeartbeatRequest(run_id="")), "run_id"),
        (lambda: budget.ListLedgers(pb.ListLedgersRequest(page_size=-1)), "page_size"),
        (lambda: budget.ListLedgers(pb.ListLedgersRequest(page_token="nope")), "page_token"),
        (
            lambda: budget.ListLedgers(pb.ListLedgersRequest(selector={"Bad": "x"})),
            "selector[",
        ),
        (
            lambda: next(iter(budget.Subscribe(pb.SubscribeRequest(selector={"Bad": "x"})))),
            "selector[",
        ),
        (
            lambda: next(iter(budget.Subscribe(pb.SubscribeRequest(kinds=[99])))),  # type: ignore[list-item]
            "kinds[0]",
        ),
        (
            lambda: next(iter(budget.Subscribe(pb.SubscribeRequest(min_severity=9)))),  # type: ignore[arg-type]
            "min_severity",
        ),
    ]
    for call, field in cases:
        code, details = failure(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (field, details)
        assert details.startswith(field), (field, details)


def test_policy_and_limit_rules_are_invalid_argument(served: Served) -> None:
    admin = served.admin
    twice = [
        pb.Cap(dimension=pb.DIMENSION_TOTAL_TOKENS, limit=1),
        pb.Cap(dimension=pb.DIMENSION_TOTAL_TOKENS, limit=2),
    ]
    fixed = pb.Policy(name="p")
    fixed.window.fixed.duration.nanos = 5
    too_many = pb.Policy(
        name="p",
        thresholds=[pb.Threshold(percent=p, severity=pb.SEVERITY_WARNING) for p in range(1, 9)],
    )
    duplicate = pb.Policy(
        name="p",
        thresholds=[
            pb.Threshold(percent=50, severity=pb.SEVERITY_WARNING),
            pb.Threshold(percent=50, severity=pb.SEVERITY_CRITICAL),
        ],
    )
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: admin.PutPolicy(pb.PutPolicyRequest()), "policy"),
        (lambda: admin.PutPolicy(pb.PutPolicyRequest(policy=fixed)), "policy.window.fixed"),
        (
            lambda: admin.PutPolicy(pb.PutPolicyRequest(policy=pb.Policy(name="p", caps=twice))),
            "policy.caps[1]",
        ),
        (lambda: admin.PutPolicy(pb.PutPolicyRequest(policy=too_many)), "policy.thresholds"),
        (lambda: admin.PutPolicy(pb.PutPolicyRequest(policy=duplicate)), "policy.thresholds"),
    ]
    for call, field in cases:
        code, details = failure(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (field, details)
        assert details.startswith(field), (field, details)
    served.budget.Consume(pb.ConsumeRequest(request_id="c", labels=THREAD, usage=OK_USAGE))
    code, details = failure(
        lambda: admin.SetLedgerLimits(
            pb.SetLedgerLimitsRequest(key="per-thread{thread=t1}", caps=twice)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("caps[1]")


def test_long_quoted_input_is_truncated_in_the_details(served: Served) -> None:
    code, details = failure(lambda: served.budget.GetLedger(pb.GetLedgerRequest(key="k" * 60_000)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details.startswith("ledger 'kkk")
    assert details.endswith("(truncated)")
    assert len(details) <= 512


class FailingEngine(Engine):
    """A real engine whose Consume has a bug: what must a client see?"""

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")


def test_a_bug_is_internal_with_no_details_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gen = serve(tmp_path, engine_type=FailingEngine)
    served = next(gen)
    try:
        code, details = failure(
            lambda: served.budget.Consume(
                pb.ConsumeRequest(request_id="c", labels=THREAD, usage=OK_USAGE)
            )
        )
        assert code == grpc.StatusCode.INTERNAL
        assert "secret" not in details
        assert "Traceback" not in details
        assert any("secret internal detail" in r.getMessage() or r.exc_info for r in caplog.records)
    finally:
        for _ in gen:
            pass


def test_counters_beyond_int64_read_as_the_int64_maximum(
    make_served: Callable[..., Served],
) -> None:
    served = make_served(
        policies=(Policy.from_mapping({"name": "spend", "per": ["agent"]}),),
        limits=Limits(max_cost_micro_usd=4 * 10**18),
    )
    for i in range(3):
        served.budget.Consume(
            pb.ConsumeRequest(
                request_id=f"c{i}",
                labels={"agent": "a"},
                usage=pb.Usage(input_tokens=1, cost_micro_usd=4 * 10**18),
            )
        )
    ledger = served.budget.GetLedger(pb.GetLedgerRequest(key="spend{agent=a}")).ledger
    assert ledger.totals.cost_micro_usd == 2**63 - 1
    assert ledger.totals.requests == 3
    events = served.budget.Subscribe(pb.SubscribeRequest(after_seq=0))
    assert next(iter(events)).event.seq == 1  # the stream is not broken by big numbers
    events.cancel()


def test_resuming_beyond_the_newest_seq_starts_with_a_gap(served: Served) -> None:
    served.budget.Consume(pb.ConsumeRequest(request_id="c1", labels=THREAD, usage=OK_USAGE))
    newest = served.runtime.events.last_seq
    events = served.budget.Subscribe(pb.SubscribeRequest(after_seq=newest + 1000))
    stream = iter(events)
    served.budget.Consume(pb.ConsumeRequest(request_id="c2", labels=THREAD, usage=OK_USAGE))
    gap = next(stream).event
    assert gap.WhichOneof("payload") == "gap"
    assert gap.gap.oldest_available_seq == newest + 1
    assert next(stream).event.seq == newest + 1
    events.cancel()


def test_reflection_lists_both_services_and_health(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in next(iter(answers)).list_services_response.service}
    assert {
        "budgetd.v1.BudgetService",
        "budgetd.v1.BudgetAdminService",
        "grpc.health.v1.Health",
    } <= names


def test_subscribe_headers_name_the_resume_point(served: Served) -> None:
    served.budget.Consume(pb.ConsumeRequest(request_id="c1", labels=THREAD, usage=OK_USAGE))
    newest = served.runtime.events.last_seq
    live = served.budget.Subscribe(pb.SubscribeRequest())
    assert dict(live.initial_metadata())["budgetd-resume-after"] == str(newest)
    live.cancel()
    replay = served.budget.Subscribe(pb.SubscribeRequest(after_seq=0))
    assert dict(replay.initial_metadata())["budgetd-resume-after"] == "0"
    replay.cancel()
