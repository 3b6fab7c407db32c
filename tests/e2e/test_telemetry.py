"""Goal: the real `budgetd` process exports metrics that a collector and a Prometheus
server read as true, whatever the traffic, and a broken pipeline never costs a call.

- OTLP/gRPC (turned on by the OTEL_* variables) and OTLP/HTTP (by the config file, the
  variables winning over it): after a scripted workload the receiver holds each metric
  with its unit, kind, attributes and resource, its values equal to what GetLedger says
  of the meter ledgers, and the export headers configured.
- Prometheus (Debian's real server scraping the daemon): PromQL returns the ledgers'
  token totals, every query of the example dashboard runs and the workload's panels have
  series, and the example alert rules load, evaluate, and fire on what they describe.
- Cardinality: thousands of thread ids add no series; past `max_series` new attribute
  sets fold into one `otel.metric.overflow` series and the sums stay exact.
- A collector that is down: every call succeeds, the log says so once per export
  attempt (never per call), exports resume when a collector comes up on that port, and
  SIGTERM still ends the daemon with 0.
- Off and wrong: `OTEL_SDK_DISABLED` opens no port; a bad variable or key stops the start
  with a message naming it.

Every wait is on a condition (an export that reflects the workload, a query that
answers, a log line), bounded only to turn a broken daemon into a failure.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd import __version__
from budgetd.v1 import budget_pb2 as pb
from examples.monitoring.queries import dashboard_queries
from tests.e2e.support import REPO, Daemon, run_budgetd
from tests.e2e.telemetry_support import (
    GrpcReceiverOn,
    free_port,
    ledgers,
    prometheus_url,
    refuses,
    scrape,
    series_per_name,
)
from tests.otlp_receiver import (
    GrpcReceiver,
    HttpReceiver,
    Metric,
    Value,
    matching,
    series_count,
    value,
)
from tests.prometheus_server import PrometheusServer, Sample
from tests.waiting import wait_until

WAIT_S = 30.0  # generous: a loaded CI machine is slow, a healthy daemon is not
INTERVAL_MS = 200
ALERTS = REPO / "examples" / "monitoring" / "alerts.yml"
CONSUME = "budgetd.v1.BudgetService/Consume"
EXPORT_FAILED = "metrics export failed; the next try is at the next interval"

COUNTERS = (
    "budgetd.tokens",
    "budgetd.token.parts",
    "budgetd.cost",
    "budgetd.usage.records",
    "budgetd.usage.unpriced",
    "budgetd.decisions",
    "budgetd.reservations",
    "budgetd.overruns",
    "budgetd.runs.opened",
    "budgetd.runs.ended",
    "budgetd.ledgers.created",
)
GAUGES = (
    "budgetd.ledgers",
    "budgetd.reservations.open",
    "budgetd.runs.open",
    "budgetd.subscribers",
    "budgetd.event_log.depth",
    "budgetd.journal.backlog",
    "budgetd.idempotency.window",
)
HISTOGRAMS = (
    "gen_ai.client.token.usage",
    "rpc.server.call.duration",
    "budgetd.journal.fsync.duration",
    "budgetd.journal.fsync.records",
    "budgetd.snapshot.duration",
)
UNITS = {
    "budgetd.tokens": "{token}",
    "budgetd.token.parts": "{token}",
    "gen_ai.client.token.usage": "{token}",
    "budgetd.cost": "USD",
    "rpc.server.call.duration": "s",
    "budgetd.journal.fsync.duration": "s",
    "budgetd.snapshot.duration": "s",
    "budgetd.idempotency.window": "s",
}
USAGE_ATTRIBUTES = {
    "gen_ai.token.type",
    "gen_ai.request.model",
    "gen_ai.provider.name",
    "gen_ai.operation.name",
    "tenant",
    "agent",
}

# The embedded defaults (model-usage, agent-usage, per-thread, ...) and two of the file's:
# a per-tenant meter to compare with, and a per-tenant hard cap that denies.
GRPC_CONFIG = """
embedded_policies = true

[[policies]]
name = "tenant-usage"
description = "Meter: usage per tenant."
per = ["tenant"]

[[policies]]
name = "tenant-cap"
per = ["tenant"]
caps = { total_tokens = 100000 }
"""


@pytest.fixture(scope="module", autouse=True)
def otel_env() -> Iterator[None]:
    """Only the variables a test sets reach a daemon, whatever the shell exported."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("OTEL_"):
                patch.delenv(name)
        yield


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every daemon a test starts is killed at the end, whatever happened."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    with GrpcReceiver() as receiver:
        yield receiver


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


def start(
    daemons: list[Daemon], home: Path, *args: str, env: dict[str, str] | None = None
) -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(home, args, env)
    daemons.append(daemon)
    return daemon.start()


def otlp_env(endpoint: str, protocol: str = "grpc", **more: str) -> dict[str, str]:
    return {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": str(INTERVAL_MS),
        **more,
    }


def usage(
    model: str,
    provider: str,
    input_tokens: int,
    output_tokens: int = 0,
    *,
    cached: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
) -> pb.Usage:
    return pb.Usage(
        model=model,
        provider=provider,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_input_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def who(tenant: str | None, agent: str, thread: str | None = None) -> dict[str, str]:
    labels = {"agent": agent}
    if tenant is not None:
        labels["tenant"] = tenant
    if thread is not None:
        labels["thread"] = thread
    return labels


def dimension_name(dimension: int) -> str:
    return pb.Dimension.Name(dimension).removeprefix("DIMENSION_").lower()


def exported(
    receiver: GrpcReceiver | HttpReceiver | GrpcReceiverOn,
    reflects: Callable[[dict[str, Metric]], bool],
    what: str,
) -> dict[str, Metric]:
    """The newest points once an export reflects what the test did (read anew only
    when another export arrived)."""
    seen = {"count": -1}
    latest: dict[str, dict[str, Metric]] = {"metrics": {}}

    def arrived() -> bool:
        count = receiver.count()
        if count == seen["count"]:
            return False
        seen["count"] = count
        latest["metrics"] = receiver.latest()
        return reflects(latest["metrics"])

    try:
        wait_until(arrived, what, limit_s=WAIT_S)
    except AssertionError as error:
        shown = {
            name: [p.attributes | {"=": p.value} for p in m.points][:6]
            for name, m in latest["metrics"].items()
        }
        raise AssertionError(f"{error}; newest points: {shown}") from None
    return latest["metrics"]


def calls(metrics: Mapping[str, Metric], method: str, code: str = "OK") -> int:
    """How many calls of `method` ended with `code`, by rpc.server.call.duration."""
    wanted = {"rpc.method": method, "rpc.response.status_code": code}
    return sum(p.count for p in matching(metrics, "rpc.server.call.duration", wanted))


def assert_usage_matches(
    metrics: Mapping[str, Metric], attribute: str, by_value: Mapping[str, pb.LedgerStatus]
) -> None:
    """Every usage metric summed over `attribute`'s values equals those ledgers' totals."""
    exported_values = {p.attributes.get(attribute) for p in metrics["budgetd.usage.records"].points}
    assert exported_values == set(by_value)
    for name, ledger in by_value.items():
        totals, where = ledger.totals, {attribute: name}
        assert value(metrics, "budgetd.tokens", where | {"gen_ai.token.type": "input"}) == (
            totals.input_tokens
        ), name
        assert value(metrics, "budgetd.tokens", where | {"gen_ai.token.type": "output"}) == (
            totals.output_tokens
        ), name
        for part, total in (
            ("cached_input", totals.cached_input_tokens),
            ("cache_write_input", totals.cache_write_input_tokens),
            ("reasoning", totals.reasoning_tokens),
        ):
            parts = value(metrics, "budgetd.token.parts", where | {"budgetd.token.part": part})
            assert parts == total, (name, part)
        assert value(metrics, "budgetd.cost", where) == pytest.approx(
            totals.cost_micro_usd / 1e6, rel=1e-9, abs=1e-12
        ), name
        assert value(metrics, "budgetd.usage.records", where) == totals.requests, name
        assert value(metrics, "budgetd.usage.unpriced", where) == totals.unpriced_requests, name
        inputs = matching(
            metrics, "gen_ai.client.token.usage", where | {"gen_ai.token.type": "input"}
        )
        assert sum(p.count for p in inputs) == totals.requests, name
        assert sum(p.value for p in inputs) == totals.input_tokens, name


def assert_histogram_points(metric: Metric) -> None:
    assert (metric.kind, metric.temporality) == ("histogram", "cumulative"), metric.name
    for point in metric.points:
        assert len(point.bucket_counts) == len(point.explicit_bounds) + 1, metric.name
        assert sum(point.bucket_counts) == point.count > 0, metric.name


def assert_names_units_kinds(metrics: Mapping[str, Metric]) -> None:
    """Counters are monotonic cumulative sums, gauges gauges, histograms cumulative
    with consistent buckets; the units are the README's."""
    assert set(COUNTERS) | set(GAUGES) | set(HISTOGRAMS) <= set(metrics)
    for name in COUNTERS:
        metric = metrics[name]
        assert (metric.kind, metric.is_monotonic, metric.temporality) == (
            "sum",
            True,
            "cumulative",
        ), name
    for name in GAUGES:
        assert metrics[name].kind == "gauge", name
    for name in HISTOGRAMS:
        assert_histogram_points(metrics[name])
    for name, unit in UNITS.items():
        assert metrics[name].unit == unit, name


def assert_one_resource(metrics: Mapping[str, Metric], environment: str) -> None:
    """One resource for every metric: the daemon's, with OTEL_RESOURCE_ATTRIBUTES'."""
    resources = [metric.resource for metric in metrics.values()]
    resource = resources[0]
    assert all(r == resource for r in resources)
    assert resource["service.name"] == "budgetd"
    assert resource["service.version"] == __version__
    assert resource["service.instance.id"]
    assert resource["deployment.environment"] == environment


# --- OTLP/gRPC: the whole workload -------------------------------------------------------


@dataclass
class Workload:
    commit: pb.CommitResponse
    check: pb.CheckResponse


def grpc_workload(daemon: Daemon) -> Workload:
    """Consumes of four models (one unpriced) for two tenants and two agents with every
    token part; a Reserve+Commit that overruns its estimate; a Reserve+Release; a Check
    the per-tenant cap denies; a run opened and closed; a snapshot; a bad Consume."""
    budget = daemon.budget()
    consumes = (
        ("c1", who("acme", "writer", "t1"), usage("gpt-4o", "openai", 1200, 300, cached=400)),
        (
            "c2",
            who("acme", "critic", "t2"),
            usage("claude-sonnet-4-5", "anthropic", 2000, 500, cache_write=800),
        ),
        (
            "c3",
            who("globex", "writer", "t3"),
            usage("gpt-4o-mini-2024-07-18", "openai", 500, 120, reasoning=80),
        ),
        ("c4", who("globex", "critic"), usage("my-local-model", "local", 40, 10)),
    )
    for request_id, labels, used in consumes:
        budget.Consume(pb.ConsumeRequest(request_id=request_id, labels=labels, usage=used))
    retry = budget.Consume(
        pb.ConsumeRequest(request_id="c4", labels=consumes[3][1], usage=consumes[3][2])
    )
    assert retry.replayed  # counted once
    assert not retry.cost_known  # the model has no price

    held = budget.Reserve(
        pb.ReserveRequest(
            request_id="r1",
            labels=who("globex", "writer", "t3"),
            estimate=usage("gpt-4o-mini-2024-07-18", "openai", 100, 10),
        )
    )
    assert held.decision == pb.DECISION_ALLOW
    commit = budget.Commit(
        pb.CommitRequest(
            request_id="k1",
            reservation_id=held.reservation_id,
            actual=usage("gpt-4o-mini-2024-07-18", "openai", 400, 90),
        )
    )
    assert commit.overruns
    released = budget.Reserve(
        pb.ReserveRequest(
            request_id="r2",
            labels=who("acme", "writer"),
            estimate=usage("claude-sonnet-4-5", "anthropic", 50),
        )
    )
    assert released.decision == pb.DECISION_ALLOW
    assert budget.Release(
        pb.ReleaseRequest(request_id="l1", reservation_id=released.reservation_id)
    ).released

    check = budget.Check(
        pb.CheckRequest(labels=who("acme", "writer"), estimate=usage("gpt-4o", "openai", 150_000))
    )
    assert check.decision == pb.DECISION_DENY
    assert [b.policy for b in check.blockers] == ["tenant-cap"]

    opened = budget.OpenRun(
        pb.OpenRunRequest(request_id="o1", run_id="run-1", labels=who("acme", "writer"))
    )
    assert opened.decision == pb.DECISION_ALLOW
    budget.CloseRun(pb.CloseRunRequest(request_id="x1", run_id="run-1"))
    daemon.admin().Snapshot(pb.SnapshotRequest())

    with pytest.raises(grpc.RpcError) as bad:
        budget.Consume(
            pb.ConsumeRequest(
                request_id="bad", labels=who("acme", "writer"), usage=usage("gpt-4o", "", -1)
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return Workload(commit, check)


def test_otlp_grpc_exports_the_workload_as_the_ledgers_count_it(
    daemons: list[Daemon], tmp_path: Path, grpc_receiver: GrpcReceiver
) -> None:
    """Turned on by the OTEL_* variables alone: every metric the workload touches reaches
    the gRPC receiver with its unit, kind, attributes and resource, with the values the
    ledgers hold, carrying the configured headers."""
    config = tmp_path / "budgetd.toml"
    config.write_text(GRPC_CONFIG)
    env = otlp_env(
        grpc_receiver.endpoint,
        OTEL_EXPORTER_OTLP_HEADERS="x-budgetd-test=e2e,authorization=Bearer%20s3cret",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    )
    daemon = start(daemons, tmp_path / "d", "--config", str(config), env=env)
    assert daemon.ready["metrics"] == "otlp"
    work = grpc_workload(daemon)

    metrics = exported(
        grpc_receiver,
        lambda m: (
            value(m, "budgetd.usage.records") == 5
            and value(m, "budgetd.runs.ended") == 1
            and calls(m, CONSUME, "INVALID_ARGUMENT") == 1
            and series_count(m, "budgetd.snapshot.duration") == 1
        ),
        "an export reflecting the whole workload",
    )
    budget = daemon.budget()

    assert_names_units_kinds(metrics)
    assert_one_resource(metrics, environment="test")

    # Usage: equal to the meters' ledgers per model, tenant and agent.
    assert_usage_matches(metrics, "gen_ai.request.model", ledgers(budget, "model-usage", "model"))
    assert_usage_matches(metrics, "tenant", ledgers(budget, "tenant-usage", "tenant"))
    assert_usage_matches(metrics, "agent", ledgers(budget, "agent-usage", "agent"))
    for point in metrics["budgetd.tokens"].points:
        assert set(point.attributes) == USAGE_ATTRIBUTES  # never thread
        assert point.attributes["gen_ai.operation.name"] == "chat"
    providers = {
        p.attributes["gen_ai.request.model"]: p.attributes["gen_ai.provider.name"]
        for p in metrics["budgetd.tokens"].points
    }
    assert providers == {
        "gpt-4o": "openai",
        "claude-sonnet-4-5": "anthropic",
        "gpt-4o-mini-2024-07-18": "openai",
        "my-local-model": "local",
    }
    assert value(metrics, "budgetd.usage.unpriced") == 1

    # Decisions: the deny names the policy and dimension of the blocker.
    [denied] = matching(metrics, "budgetd.decisions", {"budgetd.decision": "deny"})
    assert denied.attributes == {
        "budgetd.operation": "check",
        "budgetd.decision": "deny",
        "budgetd.policy": work.check.blockers[0].policy,
        "budgetd.dimension": dimension_name(work.check.blockers[0].dimension),
        "tenant": "acme",
        "agent": "writer",
    }
    assert denied.value == 1
    assert denied.attributes["budgetd.dimension"] == "total_tokens"
    decisions: Counter[tuple[Value, Value]] = Counter()
    for point in metrics["budgetd.decisions"].points:
        decisions[point.attributes["budgetd.operation"], point.attributes["budgetd.decision"]] += (
            int(point.value)
        )
    assert decisions == {("reserve", "allow"): 2, ("check", "deny"): 1, ("open_run", "allow"): 1}

    # Reservations, overruns, runs, ledgers.
    outcomes = {
        p.attributes["budgetd.outcome"]: p.value for p in metrics["budgetd.reservations"].points
    }
    assert outcomes == {"granted": 2, "committed": 1, "released": 1, "expired": 0}
    overruns = {
        p.attributes["budgetd.dimension"]: p.value for p in metrics["budgetd.overruns"].points
    }
    assert overruns == {dimension_name(o.dimension): 1 for o in work.commit.overruns}
    assert "total_tokens" in overruns
    assert value(metrics, "budgetd.runs.opened") == 1
    [ended] = metrics["budgetd.runs.ended"].points
    assert (ended.attributes, ended.value) == ({"budgetd.reason": "closed"}, 1)
    for policy, label in (("model-usage", "model"), ("tenant-usage", "tenant")):
        created = value(metrics, "budgetd.ledgers.created", {"budgetd.policy": policy})
        assert created == len(ledgers(budget, policy, label)), policy
    info = daemon.admin().GetServerInfo(pb.GetServerInfoRequest())
    assert value(metrics, "budgetd.ledgers") == info.ledgers
    assert value(metrics, "budgetd.reservations.open") == 0
    assert value(metrics, "budgetd.runs.open") == 0

    # RPC durations: one series per method and status, the bad call under its code.
    [bad] = matching(
        metrics,
        "rpc.server.call.duration",
        {"rpc.method": CONSUME, "rpc.response.status_code": "INVALID_ARGUMENT"},
    )
    assert bad.attributes == {
        "rpc.system.name": "grpc",
        "rpc.method": CONSUME,
        "rpc.response.status_code": "INVALID_ARGUMENT",
    }
    assert bad.count == 1
    assert calls(metrics, CONSUME) == 5  # the replayed retry is a call too
    for method, count in (("Reserve", 2), ("Commit", 1), ("Release", 1), ("Check", 1)):
        assert calls(metrics, f"budgetd.v1.BudgetService/{method}") == count, method
    assert calls(metrics, "budgetd.v1.BudgetAdminService/Snapshot") == 1
    assert sum(p.count for p in metrics["budgetd.journal.fsync.records"].points) >= 1

    # Every export carried the configured headers.
    assert grpc_receiver.headers
    for headers in grpc_receiver.headers:
        assert headers["x-budgetd-test"] == "e2e"
        assert headers["authorization"] == "Bearer s3cret"


# --- OTLP/HTTP: configured by the file, the variables winning ---------------------------


def test_otlp_http_configured_by_the_file_exports_what_the_ledgers_hold(
    daemons: list[Daemon], tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    """[telemetry] turns OTLP/HTTP on with its endpoint, headers and interval; the
    variables still win for the service name and resource attributes. The receiver gets
    binary protobuf on /v1/metrics with the file's header, and the usage GetLedger holds."""
    config = tmp_path / "budgetd.toml"
    config.write_text(
        f"""
[telemetry]
exporters = ["otlp"]
export_interval_seconds = 0.2
service_name = "from-the-file"
resource_attributes = {{ "deployment.environment" = "staging", "team" = "platform" }}

[telemetry.otlp]
protocol = "http/protobuf"
endpoint = "{http_receiver.base}"
headers = {{ "X-Budgetd-Test" = "http" }}
"""
    )
    env = {"OTEL_SERVICE_NAME": "budgetd", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci"}
    daemon = start(daemons, tmp_path / "d", "--config", str(config), env=env)
    assert daemon.ready["metrics"] == "otlp"
    budget = daemon.budget()
    budget.Consume(
        pb.ConsumeRequest(
            request_id="c1",
            labels=who("acme", "writer", "t1"),
            usage=usage("gpt-4o", "openai", 900, 100, cached=300),
        )
    )
    budget.Consume(
        pb.ConsumeRequest(
            request_id="c2",
            labels=who("initech", "critic", "t2"),
            usage=usage("claude-3-5-haiku", "anthropic", 300, 60, cache_write=100),
        )
    )
    held = budget.Reserve(
        pb.ReserveRequest(
            request_id="r1",
            labels=who("acme", "critic", "t3"),
            estimate=usage("claude-3-5-haiku", "anthropic", 10, 10),
        )
    )
    budget.Commit(
        pb.CommitRequest(
            request_id="k1",
            reservation_id=held.reservation_id,
            actual=usage("claude-3-5-haiku", "anthropic", 70, 30, reasoning=20),
        )
    )

    metrics = exported(
        http_receiver,
        lambda m: (
            value(m, "budgetd.usage.records") == 3
            and value(m, "budgetd.reservations", {"budgetd.outcome": "committed"}) == 1
        ),
        "an export reflecting the three usage records",
    )
    assert_usage_matches(metrics, "gen_ai.request.model", ledgers(budget, "model-usage", "model"))
    assert_usage_matches(metrics, "agent", ledgers(budget, "agent-usage", "agent"))
    assert {p.attributes["tenant"] for p in metrics["budgetd.tokens"].points} == {
        "acme",
        "initech",
    }
    tokens = metrics["budgetd.tokens"]
    assert (tokens.unit, tokens.kind, tokens.is_monotonic, tokens.temporality) == (
        "{token}",
        "sum",
        True,
        "cumulative",
    )
    assert metrics["budgetd.cost"].unit == "USD"
    assert metrics["rpc.server.call.duration"].unit == "s"
    assert_histogram_points(metrics["rpc.server.call.duration"])
    assert calls(metrics, CONSUME) == 2

    resource = tokens.resource
    assert resource["service.name"] == "budgetd"  # OTEL_SERVICE_NAME over the file
    assert resource["deployment.environment"] == "ci"  # OTEL_RESOURCE_ATTRIBUTES over it
    assert resource["team"] == "platform"  # the file's, where no variable says otherwise
    assert resource["service.version"] == __version__
    assert resource["service.instance.id"]

    assert http_receiver.headers
    for headers in http_receiver.headers:
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-budgetd-test"] == "http"


# --- Prometheus: one server, one scraped daemon, for the module -------------------------

# max_ledger_series = 2: tenant-budget's third ledger (gamma) is not exported, which
# counts in budgetd.telemetry.series.dropped (the dashboard's last panel, an alert).
SCRAPED_CONFIG = """
embedded_policies = true

[telemetry]
max_ledger_series = 2

[[policies]]
name = "tenant-budget"
per = ["tenant"]
caps = { total_tokens = 1000 }
export_ledgers = true

[[policies]]
name = "tenant-soft"
per = ["tenant"]
match = { tenant = "beta" }
caps = { requests = 1 }
enforcement = "soft"
"""


@dataclass
class Scraped:
    daemon: Daemon
    prometheus: PrometheusServer
    target: str


def scraped_workload(daemon: Daemon) -> None:
    """acme to 95 % of its tenant budget (three thresholds crossed, above the alert's
    90 %), then a Check it denies; beta warned by a soft cap and using an unpriced model;
    gamma reserving (an overrun) and releasing; a run opened and closed; a snapshot; a
    bad call."""
    budget = daemon.budget()

    def consume(request_id: str, tenant: str, used: pb.Usage) -> pb.ConsumeResponse:
        labels = who(tenant, "writer")
        answer: pb.ConsumeResponse = budget.Consume(
            pb.ConsumeRequest(request_id=request_id, labels=labels, usage=used)
        )
        return answer

    crossed = consume("c1", "acme", usage("gpt-4o", "openai", 700, 250)).crossings
    assert {c.policy for c in crossed} == {"tenant-budget"}
    assert len(crossed) == 3  # 75 %, 90 %, 95 %
    consume("c2", "beta", usage("claude-sonnet-4-5", "anthropic", 100, 20))
    assert not consume("c3", "beta", usage("my-local-model", "local", 30, 5)).cost_known
    denied = budget.Check(
        pb.CheckRequest(labels=who("acme", "writer"), estimate=usage("gpt-4o", "openai", 100))
    )
    assert denied.decision == pb.DECISION_DENY
    warned = budget.Check(
        pb.CheckRequest(
            labels=who("beta", "writer"), estimate=usage("claude-sonnet-4-5", "anthropic", 10)
        )
    )
    assert warned.decision == pb.DECISION_ALLOW_WITH_WARNING
    assert [w.policy for w in warned.warnings] == ["tenant-soft"]
    held = budget.Reserve(
        pb.ReserveRequest(
            request_id="r1", labels=who("gamma", "writer"), estimate=usage("gpt-4o-mini", "", 10)
        )
    )
    assert budget.Commit(
        pb.CommitRequest(
            request_id="k1", reservation_id=held.reservation_id, actual=usage("", "", 50, 5)
        )
    ).overruns
    held = budget.Reserve(
        pb.ReserveRequest(
            request_id="r2", labels=who("gamma", "writer"), estimate=usage("gpt-4o-mini", "", 10)
        )
    )
    budget.Release(pb.ReleaseRequest(request_id="l1", reservation_id=held.reservation_id))
    budget.OpenRun(pb.OpenRunRequest(request_id="o1", run_id="run-1", labels={"agent": "runner"}))
    budget.CloseRun(pb.CloseRunRequest(request_id="x1", run_id="run-1"))
    daemon.admin().Snapshot(pb.SnapshotRequest())
    with pytest.raises(grpc.RpcError) as bad:
        consume("bad", "acme", usage("gpt-4o", "", -1))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """A daemon serving Prometheus metrics on a port picked first (the server's targets
    are fixed in its config), after `scraped_workload`; then one Prometheus scraping it
    every second with examples/monitoring/alerts.yml loaded, for every test below."""
    home = tmp_path_factory.mktemp("scraped")
    config = home / "budgetd.toml"
    config.write_text(SCRAPED_CONFIG)
    (home / "daemon").mkdir()
    port = free_port()
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    daemon = Daemon(home / "daemon", ["--config", str(config)], env)
    try:
        daemon.start()
        assert daemon.ready["metrics"] == f"prometheus=http://127.0.0.1:{port}/metrics"
        scraped_workload(daemon)
        target = f"127.0.0.1:{port}"
        with PrometheusServer(
            home / "prometheus", [target], scrape_interval="1s", rule_files=[ALERTS]
        ) as prometheus:
            yield Scraped(daemon, prometheus, target)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def by_label(samples: list[Sample], label: str) -> dict[str, float]:
    return {labels.get(label, ""): found for labels, found in samples}


def wait_for_query(
    prometheus: PrometheusServer, promql: str, good: Callable[[list[Sample]], bool], what: str
) -> list[Sample]:
    last: list[list[Sample]] = [[]]

    def answered() -> bool:
        last[0] = prometheus.query(promql)
        return good(last[0])

    try:
        wait_until(answered, f"{what} ({promql})", limit_s=WAIT_S)
    except AssertionError as error:
        raise AssertionError(f"{error}; last result: {last[0]}") from None
    return last[0]


def test_prometheus_returns_the_token_totals_getledger_reports(scraped: Scraped) -> None:
    """Per model and per tenant, PromQL over budgetd_tokens_total (and the cost counter)
    gives what the ledgers of model-usage and tenant-budget hold."""
    prometheus, budget = scraped.prometheus, scraped.daemon.budget()
    wait_until(prometheus.targets_up, f"the daemon scraped: {prometheus.targets()}")
    models = ledgers(budget, "model-usage", "model")
    tokens = {model: float(ledger.totals.total_tokens) for model, ledger in models.items()}
    assert set(tokens) == {"gpt-4o", "claude-sonnet-4-5", "my-local-model", "gpt-4o-mini"}
    query = "sum by (gen_ai_request_model) (budgetd_tokens_total)"
    found = wait_for_query(
        prometheus,
        query,
        lambda samples: by_label(samples, "gen_ai_request_model") == tokens,
        f"the model-usage ledgers' totals {tokens}",
    )
    assert by_label(found, "gen_ai_request_model") == tokens

    tenants = ledgers(budget, "tenant-budget", "tenant")
    per_tenant = by_label(prometheus.query("sum by (tenant) (budgetd_tokens_total)"), "tenant")
    assert per_tenant == {t: float(ledger.totals.total_tokens) for t, ledger in tenants.items()}
    cost = by_label(
        prometheus.query("sum by (gen_ai_request_model) (budgetd_cost_USD_total)"),
        "gen_ai_request_model",
    )
    assert cost == pytest.approx(
        {m: ledger.totals.cost_micro_usd / 1e6 for m, ledger in models.items()}
    )
    assert cost["my-local-model"] == 0
    [(_, unpriced)] = prometheus.query(
        'sum(budgetd_usage_unpriced_total{gen_ai_request_model="my-local-model"})'
    )
    assert unpriced == models["my-local-model"].totals.unpriced_requests == 1


def test_every_dashboard_query_runs_and_the_workloads_panels_have_series(
    scraped: Scraped,
) -> None:
    """Each PromQL expression of the example Grafana dashboard is valid against the
    daemon's real series, and the workload gave every panel something to draw: the
    [1m] rates need two scrapes, which the wait allows for."""
    prometheus = scraped.prometheus
    queries = dashboard_queries()
    assert len(queries) > 30
    empty: list[str] = []

    def all_have_series() -> bool:
        empty[:] = [f"{title}: {expr}" for title, expr in queries if not prometheus.query(expr)]
        return not empty

    try:
        wait_until(all_have_series, "every dashboard query returns series", limit_s=WAIT_S)
    except AssertionError as error:
        raise AssertionError(f"{error}; still empty: {empty}") from None

    answers = {expr: prometheus.query(expr) for _, expr in queries}
    panels = dict(queries)  # title -> (last) expr

    def only(title: str, label: str) -> dict[str, float]:
        return by_label(answers[panels[title]], label)

    [(version, _)] = answers[panels["Version"]]
    assert version == {"service_version": __version__}
    assert by_label(answers[panels["Daemon up"]], "instance") == {scraped.target: 1.0}
    utilisation = {
        (labels["budgetd_policy"], labels["budgetd_dimension"]): found
        for labels, found in answers[panels["Ledger utilisation by policy"]]
    }
    assert utilisation == {("tenant-budget", "total_tokens"): 0.95}
    denials = [labels for labels, _ in answers[panels["Denials by policy and dimension"]]]
    assert denials == [{"budgetd_policy": "tenant-budget", "budgetd_dimension": "total_tokens"}]
    warnings = [labels for labels, _ in answers[panels["Warnings by policy and dimension"]]]
    assert warnings == [{"budgetd_policy": "tenant-soft", "budgetd_dimension": "requests"}]
    crossed = {
        (labels["budgetd_policy"], labels["budgetd_severity"])
        for labels, _ in answers[panels["Thresholds crossed"]]
    }
    assert {("tenant-budget", s) for s in ("warning", "critical", "final")} <= crossed
    assert set(only("Reservations by outcome", "budgetd_outcome")) == {
        "granted",
        "committed",
        "released",
        "expired",
    }
    assert set(only("Runs opened and ended", "budgetd_reason")) == {"closed"}
    assert "INVALID_ARGUMENT" in only("RPC error ratio by status code", "rpc_response_status_code")
    assert "budgetd.v1.BudgetAdminService/Snapshot" in only("RPC rate by method", "rpc_method")
    assert set(only("Usage records and unpriced ones", "gen_ai_request_model")) >= {
        "my-local-model"
    }


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert: (\S+)\s*$", ALERTS.read_text(), flags=re.MULTILINE)


def test_the_example_alert_rules_load_evaluate_and_fire_on_the_daemons_series(
    scraped: Scraped,
) -> None:
    """alerts.yml loads into a real Prometheus, every rule evaluates without error
    against the daemon's series, the ledger driven to 95 % makes BudgetdLedgerNearLimit
    pending (its `for: 5m` is beyond a test: firing is promtool's to check) while
    BudgetdLedgerExhausted stays inactive, and the ledger left out at max_ledger_series
    makes BudgetdTelemetrySeriesDropped (no `for:`) fire."""
    prometheus = scraped.prometheus
    names = alert_names()
    assert len(names) >= 9
    assert sorted(rule["name"] for rule in prometheus.rules()) == sorted(names)

    def rules() -> dict[str, dict[str, Any]]:
        return {rule["name"]: rule for rule in prometheus.rules()}

    def evaluated() -> bool:
        now = rules()
        return (
            all(rule.get("health") == "ok" for rule in now.values())
            and now["BudgetdLedgerNearLimit"]["state"] in ("pending", "firing")
            and now["BudgetdTelemetrySeriesDropped"]["state"] == "firing"
        )

    wait_until(evaluated, "the rules evaluated on the daemon's series", limit_s=WAIT_S)
    now = rules()
    [near] = now["BudgetdLedgerNearLimit"]["alerts"]
    assert near["labels"]["budgetd_policy"] == "tenant-budget"
    assert near["labels"]["tenant"] == "acme"
    assert near["labels"]["severity"] == "warning"
    assert float(near["value"]) == pytest.approx(0.95)
    assert now["BudgetdLedgerExhausted"]["state"] == "inactive"  # 95 % is not 100 %
    assert now["BudgetdDown"]["state"] == "inactive"
    [dropped] = now["BudgetdTelemetrySeriesDropped"]["alerts"]
    assert dropped["labels"]["budgetd_metric"] == "budgetd.ledger"
    [(labels, _)] = prometheus.query("budgetd_ledger_utilization > 0.9")
    assert (labels["tenant"], labels["budgetd_dimension"]) == ("acme", "total_tokens")


# --- Cardinality ---------------------------------------------------------------------


def stream_consumes(budget: Any, requests: list[pb.ConsumeRequest]) -> None:
    """Every request over one ConsumeStream; each must be answered with success."""
    messages = [pb.ConsumeStreamRequest(sequence=n, request=r) for n, r in enumerate(requests, 1)]
    answers = list(budget.ConsumeStream(iter(messages), timeout=WAIT_S))
    assert [a.sequence for a in answers] == [m.sequence for m in messages]
    errors = [a.error for a in answers if a.WhichOneof("result") != "response"]
    assert not errors, errors[:3]


def thread_consumes(first: int, last: int) -> list[pb.ConsumeRequest]:
    return [
        pb.ConsumeRequest(
            request_id=f"c{n}",
            labels=who("acme", "writer", f"thread-{n}"),
            usage=usage("gpt-4o", "openai", 3, 1),
        )
        for n in range(first, last)
    ]


def test_thousands_of_thread_ids_add_no_series(
    daemons: list[Daemon], tmp_path: Path, grpc_receiver: GrpcReceiver
) -> None:
    """3,000 Consumes over a ConsumeStream, each in a new thread (3,000 per-thread
    ledgers), leave every metric with the series it had after 10 threads, over OTLP
    and on the Prometheus endpoint alike."""
    env = otlp_env(
        grpc_receiver.endpoint,
        OTEL_METRICS_EXPORTER="otlp,prometheus",
        OTEL_EXPORTER_PROMETHEUS_PORT="0",
    )
    daemon = start(daemons, tmp_path, env=env)
    url = prometheus_url(daemon.ready)
    budget = daemon.budget()

    stream_consumes(budget, thread_consumes(0, 10))
    ten = exported(
        grpc_receiver,
        lambda m: (
            value(m, "budgetd.usage.records") == 10
            and calls(m, "budgetd.v1.BudgetService/ConsumeStream") == 1
        ),
        "an export after 10 threads",
    )
    scraped_ten = scrape(url)
    stream_consumes(budget, thread_consumes(10, 3010))
    many = exported(
        grpc_receiver,
        lambda m: (
            value(m, "budgetd.usage.records") == 3010
            and calls(m, "budgetd.v1.BudgetService/ConsumeStream") == 2
        ),
        "an export after 3,010 threads",
    )
    scraped_many = scrape(url)

    assert value(many, "budgetd.ledgers.created", {"budgetd.policy": "per-thread"}) == 3010
    assert series_count(ten, "budgetd.tokens") == series_count(many, "budgetd.tokens") == 2
    assert {name: series_count(many, name) for name in many} == {
        name: series_count(ten, name) for name in ten
    }
    assert value(many, "budgetd.tokens", {"gen_ai.token.type": "input"}) == 3 * 3010
    assert len(scraped_many["budgetd_tokens_total"]) == 2
    assert series_per_name(scraped_many) == series_per_name(scraped_ten)
    inputs = [
        v
        for labels, v in scraped_many["budgetd_tokens_total"]
        if labels["gen_ai_token_type"] == "input"
    ]
    assert inputs == [3 * 3010]
    assert not any("thread" in labels for labels, _ in scraped_many["budgetd_tokens_total"])


def tenant_consumes(tenants: int, rounds: int = 1) -> list[pb.ConsumeRequest]:
    return [
        pb.ConsumeRequest(
            request_id=f"c{round_}-{n}",
            labels=who(f"tenant-{n:02}", "writer"),
            usage=usage("gpt-4o", "openai", n + 1, 1),
        )
        for round_ in range(rounds)
        for n in range(tenants)
    ]


def test_past_max_series_new_tenants_fold_into_one_overflow_series_with_exact_sums(
    daemons: list[Daemon], tmp_path: Path, grpc_receiver: GrpcReceiver
) -> None:
    """With max_series = 5, the first five tenants keep their series and the fifteen
    after them fold into one `otel.metric.overflow = true` series per token type: the
    series count stays at the cap plus one and the sums equal the ledger's."""
    config = tmp_path / "budgetd.toml"
    config.write_text("[telemetry]\nmax_series = 5\n")
    daemon = start(
        daemons, tmp_path / "d", "--config", str(config), env=otlp_env(grpc_receiver.endpoint)
    )
    budget = daemon.budget()
    stream_consumes(budget, tenant_consumes(20))
    metrics = exported(
        grpc_receiver,
        lambda m: value(m, "budgetd.usage.records") == 20,
        "an export of the 20 usage records",
    )

    assert series_count(metrics, "budgetd.tokens") == 2 * (5 + 1)
    overflow = matching(metrics, "budgetd.tokens", {"otel.metric.overflow": True})
    assert sorted(p.attributes["gen_ai.token.type"] for p in overflow) == ["input", "output"]
    for point in overflow:
        assert set(point.attributes) == {"gen_ai.token.type", "otel.metric.overflow"}
    kept = {p.attributes.get("tenant") for p in metrics["budgetd.tokens"].points} - {None}
    assert kept == {f"tenant-{n:02}" for n in range(5)}
    assert value(
        metrics, "budgetd.tokens", {"otel.metric.overflow": True, "gen_ai.token.type": "input"}
    ) == sum(range(6, 21))

    [model] = ledgers(budget, "model-usage", "model").values()
    totals = model.totals
    assert value(metrics, "budgetd.tokens", {"gen_ai.token.type": "input"}) == totals.input_tokens
    assert value(metrics, "budgetd.tokens", {"gen_ai.token.type": "output"}) == totals.output_tokens
    assert value(metrics, "budgetd.usage.records") == totals.requests == 20
    assert value(metrics, "budgetd.cost") == pytest.approx(totals.cost_micro_usd / 1e6)
    inputs = matching(metrics, "gen_ai.client.token.usage", {"gen_ai.token.type": "input"})
    assert sum(p.count for p in inputs) == 20
    dropped = {
        p.attributes["budgetd.metric"]: p.value
        for p in metrics["budgetd.telemetry.series.dropped"].points
    }
    assert dropped == {"budgetd.tokens": 15}
    warned = [
        line
        for line in daemon.lines
        if str(line.get("event", "")).startswith("metric series cap reached")
    ]
    assert [(w["metric"], w["max_series"]) for w in warned] == [("budgetd.tokens", 5)]


DROPPED_CONFIG = """
[telemetry]
max_series = 5
max_ledger_series = 2

[[policies]]
name = "tenant-budget"
per = ["tenant"]
caps = { total_tokens = 1000000 }
export_ledgers = true
"""


@pytest.mark.parametrize(("metric", "left_out"), [("budgetd.tokens", 15), ("budgetd.ledger", 18)])
def test_series_dropped_counts_each_left_out_series_once(
    daemons: list[Daemon],
    tmp_path: Path,
    grpc_receiver: GrpcReceiver,
    metric: str,
    left_out: int,
) -> None:
    """budgetd.telemetry.series.dropped ("attribute sets folded into an overflow series,
    ledgers not exported", unit {series}) counts series: 20 tenants calling twice, with
    max_series = 5 and max_ledger_series = 2, leave out 15 token series and 18 ledgers,
    however often each of them is used."""
    config = tmp_path / "budgetd.toml"
    config.write_text(DROPPED_CONFIG)
    daemon = start(
        daemons, tmp_path / "d", "--config", str(config), env=otlp_env(grpc_receiver.endpoint)
    )
    stream_consumes(daemon.budget(), tenant_consumes(20, rounds=2))
    metrics = exported(
        grpc_receiver,
        lambda m: value(m, "budgetd.usage.records") == 40,
        "an export of the 40 usage records",
    )
    assert value(metrics, "budgetd.tokens", {"gen_ai.token.type": "input"}) == 2 * sum(range(1, 21))
    assert series_count(metrics, "budgetd.ledger.used") == 2
    assert (
        value(metrics, "budgetd.telemetry.series.dropped", {"budgetd.metric": metric}) == left_out
    )


# --- A collector that is down ------------------------------------------------------------


def export_failures(daemon: Daemon) -> list[dict[str, Any]]:
    return [line for line in daemon.lines if line.get("event") == EXPORT_FAILED]


def test_a_collector_that_is_down_costs_no_call_and_floods_no_log(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    """OTLP to a port nobody listens on, every 200 ms, each export given 1 s: 200 Consumes
    all succeed and count exactly; the log has at most one failure line per export
    attempt (so far fewer than calls); a collector coming up on that port gets the
    exact totals and the log says exports work again; with it gone again SIGTERM still
    ends the daemon with 0."""
    port = free_port()
    config = tmp_path / "budgetd.toml"
    # The file's timeout (seconds, the daemon's own unit) rather than the variable, which
    # the SDK reads in seconds where the specification says milliseconds.
    config.write_text("[telemetry.otlp]\ntimeout_seconds = 1\n")
    began = time.monotonic()
    env = otlp_env(f"http://127.0.0.1:{port}")
    daemon = start(daemons, tmp_path / "d", "--config", str(config), env=env)
    budget = daemon.budget()
    labels = who("acme", "writer", "t1")
    for n in range(200):
        answer = budget.Consume(
            pb.ConsumeRequest(
                request_id=f"c{n}", labels=labels, usage=usage("gpt-4o", "openai", 7, 2)
            ),
            timeout=WAIT_S,
        )
        assert not answer.replayed
    ledger = budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}")).ledger
    assert (ledger.totals.requests, ledger.totals.input_tokens) == (200, 1400)
    daemon.wait_for(EXPORT_FAILED)

    def at_most_one_line_per_attempt() -> None:
        # The reader waits an interval after each attempt ends: at most one attempt per
        # interval elapsed, plus the final one at shutdown.
        attempts = (time.monotonic() - began) * 1000 / INTERVAL_MS + 2
        failures = export_failures(daemon)
        assert 1 <= len(failures) <= attempts
        streaks = [f["failures"] for f in failures]  # 1, 2, ... until an export works
        assert all(n == 1 or n == before + 1 for before, n in pairwise([0, *streaks]))
        warnings = [line for line in daemon.lines if line.get("level") in ("warning", "error")]
        assert len(warnings) < 200, warnings[:5]  # none per call

    at_most_one_line_per_attempt()

    with GrpcReceiverOn(port) as receiver:
        metrics = exported(
            receiver,
            lambda m: value(m, "budgetd.usage.records") == 200,
            "the collector, once up, gets the 200 usage records",
        )
        input_tokens = value(metrics, "budgetd.tokens", {"gen_ai.token.type": "input"})
        assert input_tokens == ledger.totals.input_tokens
        assert calls(metrics, CONSUME) == 200
        again = daemon.wait_for("metrics export works again")
        assert again["failed"] >= 1
    streak = len(export_failures(daemon))
    daemon.wait_for_nth(EXPORT_FAILED, streak + 1)  # down again: failing, not stuck
    at_most_one_line_per_attempt()

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0  # bounded: the support's wait
    assert daemon.wait_for("stopped")
    at_most_one_line_per_attempt()


# --- Off, and wrong --------------------------------------------------------------------


def test_otel_sdk_disabled_turns_metrics_off_and_opens_no_port(
    daemons: list[Daemon], tmp_path: Path
) -> None:
    """OTEL_SDK_DISABLED=true wins over OTEL_METRICS_EXPORTER=prometheus: the ready log
    says metrics are off, nothing listens on the port asked for, and calls work."""
    port = free_port()
    env = {
        "OTEL_SDK_DISABLED": "true",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
    }
    daemon = start(daemons, tmp_path, env=env)
    assert daemon.ready["metrics"] == "off"
    assert refuses(port)
    daemon.budget().Consume(
        pb.ConsumeRequest(
            request_id="c1", labels=who("acme", "writer"), usage=usage("gpt-4o", "", 1)
        )
    )
    assert refuses(port)
    assert daemon.stop() == 0


def test_the_variables_win_over_the_file(daemons: list[Daemon], tmp_path: Path) -> None:
    """The file turns the Prometheus endpoint on at one port: OTEL_METRICS_EXPORTER=none
    turns it off, and OTEL_EXPORTER_PROMETHEUS_PORT moves it."""
    file_port, env_port = free_port(), free_port()
    config = tmp_path / "budgetd.toml"
    config.write_text(
        f'[telemetry]\nexporters = ["prometheus"]\n\n[telemetry.prometheus]\nport = {file_port}\n'
    )
    off = start(
        daemons, tmp_path / "off", "--config", str(config), env={"OTEL_METRICS_EXPORTER": "none"}
    )
    assert off.ready["metrics"] == "off"
    assert refuses(file_port)
    assert off.stop() == 0

    moved = start(
        daemons,
        tmp_path / "moved",
        "--config",
        str(config),
        env={"OTEL_EXPORTER_PROMETHEUS_PORT": str(env_port)},
    )
    url = f"http://127.0.0.1:{env_port}/metrics"
    assert moved.ready["metrics"] == f"prometheus={url}"
    assert refuses(file_port)
    samples = scrape(url)
    [(labels, _)] = samples["target_info"]
    assert (labels["service_name"], labels["service_version"]) == ("budgetd", __version__)
    assert moved.stop() == 0


BAD_ENV = [
    pytest.param(
        {"OTEL_METRICS_EXPORTER": "bogus"}, ("OTEL_METRICS_EXPORTER", "'bogus'"), id="exporter"
    ),
    pytest.param(
        {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": "x"},
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "'x'"),
        id="prometheus-port",
    ),
    pytest.param({"OTEL_SDK_DISABLED": "maybe"}, ("OTEL_SDK_DISABLED",), id="sdk-disabled"),
    pytest.param(
        {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "'http/json'"),
        id="otlp-protocol",
    ),
    pytest.param(
        {"OTEL_METRIC_EXPORT_INTERVAL": "1s"}, ("OTEL_METRIC_EXPORT_INTERVAL",), id="interval"
    ),
]


def listeners_args(home: Path) -> list[str]:
    home.mkdir(parents=True, exist_ok=True)
    return [
        "--socket",
        str(home / "budgetd.sock"),
        "--tcp",
        "127.0.0.1:0",
        "--state-dir",
        str(home / "state"),
        "--log-format",
        "json",
    ]


BAD_FILE = [
    pytest.param(
        '[telemetry]\nexporters = ["statsd"]\n', ("telemetry.exporters", "'statsd'"), id="exporter"
    ),
    pytest.param("[telemetry]\nmax_series = 0\n", ("telemetry.max_series",), id="max-series"),
    pytest.param(
        '[telemetry]\nexporters = ["prometheus"]\n[telemetry.prometheus]\nhost = "0.0.0.0"\n',
        ("telemetry.prometheus.host", "allow_non_loopback"),
        id="non-loopback",
    ),
]
THREAD_ATTRIBUTE = '[telemetry]\nattributes = ["tenant", "thread"]\n'


def assert_refused(ran: subprocess.CompletedProcess[str], *named: str) -> None:
    assert ran.returncode == 2, ran.stderr
    for needle in named:
        assert needle in ran.stderr
    assert '"ready"' not in ran.stderr


@pytest.mark.parametrize(("env", "named"), BAD_ENV)
def test_a_bad_variable_stops_the_start_naming_it(
    tmp_path: Path, env: dict[str, str], named: tuple[str, ...]
) -> None:
    """Exit 2 before anything listens, the message naming the variable and its value."""
    assert_refused(run_budgetd(*listeners_args(tmp_path), env=env), *named)


def test_thread_as_an_attribute_fails_check_config_and_the_start_naming_the_key(
    tmp_path: Path,
) -> None:
    """`thread` holds ids: the file that makes it an attribute is refused, by
    check-config and at start, with the file, the key and the label named."""
    config = tmp_path / "budgetd.toml"
    config.write_text(THREAD_ATTRIBUTE)
    named = (f"{config}:telemetry.attributes", "'thread'", "never an attribute")
    assert_refused(run_budgetd("check-config", str(config)), *named)
    assert_refused(run_budgetd("--config", str(config), *listeners_args(tmp_path / "d")), *named)


@pytest.mark.parametrize(("text", "named"), BAD_FILE)
def test_check_config_names_a_bad_telemetry_key(
    tmp_path: Path, text: str, named: tuple[str, ...]
) -> None:
    """Exit 2 with file:telemetry.key and why."""
    config = tmp_path / "budgetd.toml"
    config.write_text(text)
    assert_refused(run_budgetd("check-config", str(config)), str(config), *named)


def test_a_prometheus_port_in_use_stops_the_start_naming_the_variable(tmp_path: Path) -> None:
    """A taken metrics port fails the start at once (exit 1), saying which variable
    picks another, rather than a daemon that serves without its metrics."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
        ran = run_budgetd(*listeners_args(tmp_path), env=env)
    assert ran.returncode == 1, ran.stderr
    assert f"127.0.0.1:{port}" in ran.stderr
    assert "OTEL_EXPORTER_PROMETHEUS_PORT" in ran.stderr
    assert '"ready"' not in ran.stderr
