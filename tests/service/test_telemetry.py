"""The metrics pipeline inside a real in-process server: calls through gRPC, counts through
the one mutation path and the interceptor, values read the way Prometheus reads them
(a scrape of the daemon's own endpoint, parsed by prometheus_client's parser).

What is checked: every call is timed under its method and final status; token totals
equal what GetLedger answers; a policy put over the API with `export_ledgers` shows its
ledgers' utilisation (read on the event loop from the scrape's thread); a scrape while
calls run never disturbs them.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from budgetd.telemetry.settings import TelemetrySettings
from budgetd.v1 import budget_pb2 as pb
from tests.service.support import Served, serve

Sample = tuple[dict[str, str], float]


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[Served]:
    settings = TelemetrySettings(exporters=("prometheus",), prometheus_port=0)
    yield from serve(tmp_path, telemetry=settings)


def _scrape(served: Served) -> dict[str, list[Sample]]:
    assert served.telemetry is not None and served.telemetry.prometheus is not None
    port = served.telemetry.prometheus.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _sum(samples: list[Sample], **labels: str) -> float:
    return sum(v for found, v in samples if all(found.get(k) == x for k, x in labels.items()))


def _consume(i: int, tenant: str = "acme", model: str = "gpt-4o") -> pb.ConsumeRequest:
    return pb.ConsumeRequest(
        request_id=f"m-{i}",
        labels={"agent": "a", "thread": f"t{i}", "tenant": tenant},
        usage=pb.Usage(input_tokens=100 + i, output_tokens=10, model=model),
    )


def test_calls_are_timed_by_method_and_status_and_tokens_match_the_ledgers(
    metered: Served,
) -> None:
    for i in range(5):
        metered.budget.Consume(_consume(i, model="gpt-4o" if i % 2 else "gpt-4o-mini"))
    with pytest.raises(grpc.RpcError) as refused:
        metered.budget.Consume(pb.ConsumeRequest(request_id="", labels={"agent": "a"}))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    scraped = _scrape(metered)
    counts = scraped["rpc_server_call_duration_seconds_count"]
    method = "budgetd.v1.BudgetService/Consume"
    assert _sum(counts, rpc_method=method, rpc_response_status_code="OK") == 5
    assert _sum(counts, rpc_method=method, rpc_response_status_code="INVALID_ARGUMENT") == 1
    assert _sum(counts, rpc_system_name="grpc") == 6
    tokens = scraped["budgetd_tokens_total"]
    for model in ("gpt-4o", "gpt-4o-mini"):
        ledger = metered.budget.GetLedger(
            pb.GetLedgerRequest(key=f"model-usage{{model={model}}}")
        ).ledger
        totals = ledger.totals
        assert _sum(tokens, gen_ai_request_model=model, gen_ai_token_type="input") == (
            totals.input_tokens
        )
        assert _sum(tokens, gen_ai_request_model=model, gen_ai_token_type="output") == (
            totals.output_tokens
        )
        cost = _sum(scraped["budgetd_cost_USD_total"], gen_ai_request_model=model)
        assert cost == pytest.approx(totals.cost_micro_usd / 1e6)
    assert all("thread" not in labels for labels, _ in tokens)
    usage = scraped["gen_ai_client_token_usage_count"]
    assert _sum(usage, gen_ai_token_type="input") == 5


def test_a_policy_put_over_the_api_exports_its_ledgers_utilisation(metered: Served) -> None:
    policy = pb.Policy(
        name="tenant-budget",
        per=["tenant"],
        caps=[pb.Cap(dimension=pb.DIMENSION_TOTAL_TOKENS, limit=1000)],
        export_ledgers=True,
    )
    metered.admin.PutPolicy(pb.PutPolicyRequest(policy=policy))
    listed = metered.admin.ListPolicies(pb.ListPoliciesRequest()).policies
    assert [p.export_ledgers for p in listed if p.name == "tenant-budget"] == [True]
    metered.budget.Consume(_consume(1, tenant="acme"))  # 111 tokens
    metered.budget.Consume(_consume(2, tenant="globex"))  # 112 tokens
    scraped = _scrape(metered)
    used = {labels["tenant"]: v for labels, v in scraped["budgetd_ledger_used"]}
    assert used == {"acme": 111, "globex": 112}
    utilisation = {labels["tenant"]: v for labels, v in scraped["budgetd_ledger_utilization"]}
    assert utilisation == {"acme": pytest.approx(0.111), "globex": pytest.approx(0.112)}
    labels, _ = scraped["budgetd_ledger_limit"][0]
    assert (labels["budgetd_policy"], labels["budgetd_dimension"]) == (
        "tenant-budget",
        "total_tokens",
    )


def test_scrapes_while_calls_run_lose_no_count(metered: Served) -> None:
    stop = threading.Event()
    scrapes = 0

    def scrape_until_stopped() -> None:
        nonlocal scrapes
        while not stop.is_set():
            _scrape(metered)
            scrapes += 1

    scraper = threading.Thread(target=scrape_until_stopped)
    scraper.start()
    try:
        for i in range(300):
            metered.budget.Consume(_consume(i))
    finally:
        stop.set()
        scraper.join(timeout=30)
    assert scrapes > 0
    scraped = _scrape(metered)
    records = _sum(scraped["budgetd_usage_records_total"])
    assert records == 300
    ledger = metered.budget.GetLedger(pb.GetLedgerRequest(key="daily")).ledger
    assert _sum(scraped["budgetd_tokens_total"]) == ledger.totals.total_tokens
