"""Telemetry without gRPC: what the one mutation path adds to the metric series, and the
settings that turn exporters on. The recorder is driven by a real engine through the
runtime's own path (memory mode), so every count is checked against the ledgers it
mirrors; cardinality stays flat whatever ids callers send; bad settings name their key
or variable.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from budgetd import config
from budgetd.config import ConfigError
from budgetd.core import Enforcement, Engine, Limits, Policy, Usage, default_policies
from budgetd.core.dimensions import Dimension
from budgetd.event_log import EventLog
from budgetd.runtime import Runtime
from budgetd.telemetry import settings as telemetry_settings
from budgetd.telemetry.recorder import Recorder
from budgetd.telemetry.series import OVERFLOW, TOKEN_BOUNDS, Buckets
from budgetd.telemetry.settings import SettingError, TelemetrySettings

NOW = 1_800_000_000.0


class Driven:
    """A runtime in memory mode whose mutations feed a recorder, as the daemon wires it."""

    def __init__(self, policies: tuple[Policy, ...], settings: TelemetrySettings) -> None:
        self.engine = Engine(policies, limits=Limits())
        self.runtime = Runtime(self.engine, EventLog(1000, 4, 100, 0), clock=lambda: NOW)
        self.recorder = Recorder(settings)
        self.recorder.ledgers.use_policies(self.engine.policies, frozenset(settings.attributes))
        self.runtime.on_applied = self.recorder.applied
        self.runtime.on_checked = self.recorder.checked

    def apply(self, op: str, **args: Any) -> Any:
        return asyncio.run(self.runtime.apply(op, args))

    def consume(self, request_id: str, labels: Mapping[str, str], usage: Usage) -> Any:
        return self.apply(
            "consume", labels=dict(labels), usage=usage, request_id=request_id, run_id=""
        )


def _usage(model: str, inputs: int, outputs: int, cached: int = 0) -> Usage:
    return Usage(
        input_tokens=inputs, output_tokens=outputs, cached_input_tokens=cached, model=model
    )


def test_token_and_cost_sums_equal_the_ledgers_they_mirror() -> None:
    driven = Driven(default_policies(), TelemetrySettings())
    work = [
        ("a", "acme", _usage("gpt-4o", 1200, 300, cached=200)),
        ("a", "acme", _usage("gpt-4o-mini", 50, 10)),
        ("b", "globex", _usage("gpt-4o", 700, 90)),
        ("b", "globex", _usage("no-such-model", 5, 5)),  # unpriced
    ]
    for i, (agent, tenant, usage) in enumerate(work):
        driven.consume(f"c{i}", {"agent": agent, "tenant": tenant, "thread": f"t{i}"}, usage)
    by_model: dict[str, list[int]] = {}
    for series in driven.recorder.usage.items():
        model = str(series.attributes.get("gen_ai.request.model", ""))
        totals = by_model.setdefault(model, [0, 0, 0, 0, 0])
        for i, value in enumerate(
            (series.input, series.output, series.cost_micro_usd, series.records, series.unpriced)
        ):
            totals[i] += value
    for model in ("gpt-4o", "gpt-4o-mini", "no-such-model"):
        ledger = driven.engine.get_ledger(f"model-usage{{model={model}}}", NOW).totals
        inputs, outputs, cost, records, unpriced = by_model[model]
        assert (inputs, outputs, cost, records) == (
            ledger.input_tokens,
            ledger.output_tokens,
            ledger.cost_micro_usd,
            ledger.requests,
        )
        assert unpriced == ledger.unpriced_requests
    gpt4o = [s for s in driven.recorder.usage.items() if s.input_attributes.get("tenant") == "acme"]
    assert {s.cached_input for s in gpt4o} == {200, 0}
    assert gpt4o[0].input_attributes["gen_ai.token.type"] == "input"
    assert "thread" not in gpt4o[0].attributes


def test_a_retry_answered_from_memory_adds_nothing() -> None:
    driven = Driven(default_policies(), TelemetrySettings())
    labels = {"agent": "a", "thread": "t"}
    driven.consume("same", labels, _usage("gpt-4o", 10, 1))
    driven.consume("same", labels, _usage("gpt-4o", 10, 1))
    (series,) = driven.recorder.usage.items()
    assert (series.records, series.input) == (1, 10)
    assert sum(series.input_buckets.read()[0]) == 1


def test_thousands_of_threads_add_no_series() -> None:
    driven = Driven(default_policies(), TelemetrySettings())
    for i in range(3000):
        driven.consume(f"c{i}", {"agent": "a", "thread": f"thread-{i}"}, _usage("gpt-4o", 1, 1))
    assert len(driven.recorder.usage) == 1
    assert driven.recorder.usage.items()[0].records == 3000
    assert len(driven.recorder.decisions) == 0  # no decision was asked for


def test_past_max_series_new_attribute_sets_fold_into_one_overflow_series() -> None:
    driven = Driven(default_policies(), TelemetrySettings(max_series=3))
    for i in range(10):
        driven.consume(f"c{i}", {"agent": "a", "tenant": f"t{i}"}, _usage("gpt-4o", 10, 0))
    series = driven.recorder.usage.items()
    assert len(series) == 4
    assert series[-1].attributes == OVERFLOW
    assert (series[-1].records, sum(s.input for s in series)) == (7, 100)
    assert driven.recorder.usage.overflowed == 7


def test_decisions_name_the_blocking_policy_and_dimension() -> None:
    capped = (
        Policy("tenant-cap", per=("tenant",), caps=((Dimension.TOTAL_TOKENS, 100),)),
        Policy(
            "soft",
            per=("agent",),
            caps=((Dimension.REQUESTS, 1),),
            enforcement=Enforcement.SOFT,
        ),
    )
    driven = Driven(capped, TelemetrySettings())
    labels = {"tenant": "acme", "agent": "a"}
    driven.consume("c1", labels, _usage("gpt-4o", 90, 0))
    driven.runtime.check(labels, _usage("gpt-4o", 50, 0))  # over the hard cap: deny
    driven.runtime.check({"tenant": "other", "agent": "a"}, _usage("gpt-4o", 5, 0))  # warn
    driven.runtime.check({"tenant": "other", "agent": "b"}, _usage("gpt-4o", 5, 0))  # allow
    counts = {
        tuple(sorted(c.attributes.items())): c.value for c in driven.recorder.decisions.items()
    }
    assert counts == {
        (
            ("agent", "a"),
            ("budgetd.decision", "deny"),
            ("budgetd.dimension", "total_tokens"),
            ("budgetd.operation", "check"),
            ("budgetd.policy", "tenant-cap"),
            ("tenant", "acme"),
        ): 1,
        (
            ("agent", "a"),
            ("budgetd.decision", "warn"),
            ("budgetd.dimension", "requests"),
            ("budgetd.operation", "check"),
            ("budgetd.policy", "soft"),
            ("tenant", "other"),
        ): 1,
        (
            ("agent", "b"),
            ("budgetd.decision", "allow"),
            ("budgetd.operation", "check"),
            ("tenant", "other"),
        ): 1,
    }
    crossed = {
        (c.attributes["budgetd.policy"], c.attributes["budgetd.severity"]): c.value
        for c in driven.recorder.crossings.items()
    }
    assert crossed == {
        ("tenant-cap", "warning"): 1,  # 90 of 100 tokens: the 75 % and 90 % marks
        ("tenant-cap", "critical"): 1,
        ("soft", "warning"): 1,  # 1 of 1 request: every mark at once
        ("soft", "critical"): 1,
        ("soft", "final"): 1,
    }


def test_reservations_overruns_and_runs_are_counted_once_each() -> None:
    driven = Driven(default_policies(), TelemetrySettings())
    labels = {"agent": "a", "thread": "t"}
    held = driven.apply(
        "reserve",
        labels=labels,
        estimate=_usage("gpt-4o", 10, 0),
        ttl_s=60.0,
        request_id="r1",
        run_id="",
    )
    driven.apply(
        "commit",
        reservation_id=held.reservation_id,
        actual=_usage("gpt-4o", 25, 0),
        request_id="c1",
    )
    other = driven.apply(
        "reserve",
        labels=labels,
        estimate=_usage("gpt-4o", 10, 0),
        ttl_s=60.0,
        request_id="r2",
        run_id="",
    )
    driven.apply("release", reservation_id=other.reservation_id, request_id="x1")
    driven.apply("open_run", labels=labels, run_id="run-1", ttl_s=60.0, request_id="o1")
    driven.apply("close_run", run_id="run-1", request_id="k1")
    recorder = driven.recorder
    assert recorder.reservations == {"granted": 2, "committed": 1, "released": 1, "expired": 0}
    overruns = {c.attributes["budgetd.dimension"]: c.value for c in recorder.overruns.items()}
    assert overruns["input_tokens"] == 1
    assert recorder.runs_opened == 1
    assert {c.attributes["budgetd.reason"]: c.value for c in recorder.runs_ended.items()} == {
        "closed": 1
    }


def test_exported_ledgers_are_learnt_from_answers_capped_and_forgotten_when_closed() -> None:
    policy = Policy(
        "per-tenant", per=("tenant",), caps=((Dimension.TOTAL_TOKENS, 1000),), export_ledgers=True
    )
    hidden = Policy(
        "per-thread", per=("thread",), caps=((Dimension.TOTAL_TOKENS, 10),), export_ledgers=True
    )
    driven = Driven((policy, hidden), TelemetrySettings(max_ledger_series=2))
    assert driven.recorder.ledgers.policies == {"per-tenant"}  # thread is no attribute
    for i, tenant in enumerate(("acme", "globex", "initech")):
        driven.consume(f"c{i}", {"tenant": tenant, "thread": "t"}, _usage("gpt-4o", 250, 0))
    ledgers = driven.recorder.ledgers
    assert (len(ledgers), ledgers.dropped) == (2, 1)
    points = ledgers.points(lambda key: driven.engine.get_ledger(key, NOW))
    assert sorted((p[0]["tenant"], p[1], p[2], p[3], p[4]) for p in points) == [
        ("acme", 250, 1000, 750, 0.25),
        ("globex", 250, 1000, 750, 0.25),
    ]
    assert all(p[0]["budgetd.dimension"] == "total_tokens" for p in points)
    driven.apply("reset_ledger", key="per-tenant{tenant=acme}", request_id="z1")
    closed = {c.attributes["budgetd.reason"] for c in driven.recorder.closed.items()}
    assert closed == {"reset"}
    assert len(ledgers) == 1


def test_buckets_count_a_value_in_the_bucket_its_bound_closes() -> None:
    buckets = Buckets(TOKEN_BOUNDS)
    for value in (0, 1, 2, 4, 67108864, 67108865):
        buckets.record(value)
    counts, total, low, high = buckets.read()
    assert counts[0] == 2  # 0 and 1: (-inf, 1]
    assert counts[1] == 2  # 2 and 4: (1, 4]
    assert counts[len(TOKEN_BOUNDS) - 1] == 1  # 67108864 closes the last bound
    assert counts[-1] == 1  # above every bound: +Inf
    assert (sum(counts), total, low, high) == (6, 134217736, 0, 67108865)


# --- settings ---------------------------------------------------------------------------


def _resolved(file: Mapping[str, object], env: Mapping[str, str]) -> TelemetrySettings:
    return telemetry_settings.resolve(telemetry_settings.from_file(file), env)


def test_variables_win_over_the_file() -> None:
    file = {
        "exporters": ["otlp"],
        "export_interval_seconds": 30,
        "otlp": {"endpoint": "http://collector:4317", "headers": {"X-Key": "k"}},
        "prometheus": {"port": 9000},
    }
    assert _resolved(file, {}).otlp_endpoint == "http://collector:4317"
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "1500",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "9999",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    settings = _resolved(file, env)
    assert settings.exporters == ("prometheus", "otlp")
    assert (settings.export_interval_s, settings.prometheus_port) == (1.5, 9999)
    assert settings.otlp_protocol == "http/protobuf"
    # The SDK reads its own endpoint variable: the file's is not passed over it.
    assert settings.otlp_endpoint is None and "otlp_endpoint" in settings.from_env
    assert settings.otlp_headers == (("x-key", "k"),)
    assert _resolved(file, {"OTEL_METRICS_EXPORTER": "none"}).exporters == ()
    assert _resolved(file, {"OTEL_SDK_DISABLED": "true"}).disabled


@pytest.mark.parametrize(
    ("env", "variable", "reason"),
    [
        ({"OTEL_METRICS_EXPORTER": "otlp,zipkin"}, "OTEL_METRICS_EXPORTER", "unknown exporter"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "OTEL_METRIC_EXPORT_INTERVAL", "milliseconds"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "x"}, "OTEL_EXPORTER_PROMETHEUS_PORT", "port"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "one of"),
        ({"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED", "true or false"),
        (
            {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0"},
            "OTEL_EXPORTER_PROMETHEUS_HOST",
            "not a loopback address",
        ),
    ],
)
def test_a_bad_variable_is_named(env: dict[str, str], variable: str, reason: str) -> None:
    with pytest.raises(SettingError) as raised:
        _resolved({}, env)
    assert (raised.value.key, raised.value.env) == (variable, True)
    assert reason in raised.value.reason


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[telemetry]\nattributes = ["tenant", "thread"]\n', "telemetry.attributes", "never"),
        ('[telemetry]\nexporters = ["jaeger"]\n', "telemetry.exporters", "unknown exporter"),
        ("[telemetry.otlp]\nretries = 3\n", "telemetry.otlp.retries", "unknown key"),
        ('[telemetry.otlp]\nendpoint = "collector:4317"\n', "telemetry.otlp.endpoint", "URL"),
        ("[telemetry]\nmax_series = 0\n", "telemetry.max_series", "1..100000"),
        ("[telemetry.prometheus]\nport = 70000\n", "telemetry.prometheus.port", "0..65535"),
        (
            '[telemetry]\nexporters = ["prometheus"]\n[telemetry.prometheus]\nhost = "10.0.0.1"\n',
            "telemetry.prometheus.host",
            "allow_non_loopback",
        ),
    ],
)
def test_a_bad_file_key_is_named(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = tmp_path / "budgetd.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        config.load_file(path)
    assert raised.value.key == key
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"{path}:{key}: ")


def test_a_non_loopback_endpoint_is_allowed_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "budgetd.toml"
    path.write_text(
        '[telemetry]\nexporters = ["prometheus"]\n'
        '[telemetry.prometheus]\nhost = "0.0.0.0"\nallow_non_loopback = true\n',
        encoding="utf-8",
    )
    assert config.load_file(path).telemetry.prometheus_host == "0.0.0.0"


def test_the_snapshot_writers_fork_runs_none_of_the_sdks_after_fork_work() -> None:
    """The daemon forks only to write snapshots; the SDK's own after-fork handlers (a
    new exporter thread, resource detection on a thread pool) once hung that child."""
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter  # noqa: PLC0415

    from budgetd.telemetry.exporters import (  # noqa: PLC0415 (loads the SDK)
        ForkFreeMeterProvider,
        PeriodicReader,
    )
    from budgetd.telemetry.instruments import Histograms  # noqa: PLC0415

    with open(os.devnull, "w") as sink:
        reader = PeriodicReader(
            ConsoleMetricExporter(out=sink),
            Histograms(Recorder(TelemetrySettings())),
            export_interval_millis=60_000,
        )
        provider = ForkFreeMeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        try:
            pid = os.fork()
            if pid == 0:  # the child: exit 0 only if no thread was started for it
                os._exit(0 if threading.active_count() == 1 else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            provider.shutdown()


def test_rpc_series_are_bounded_by_the_contract_not_by_max_series() -> None:
    """max_series bounds label values callers choose; methods and status codes are the
    contract's own, so a small max_series never folds one method into another."""
    recorder = Recorder(TelemetrySettings(max_series=1))
    for method in ("Check", "Reserve", "Commit", "Consume", "GetLedger"):
        for code in ("OK", "INVALID_ARGUMENT"):
            recorder.rpc_series(f"budgetd.v1.BudgetService/{method}", code).buckets.record(0.001)
    assert len(recorder.rpc) == 10 and recorder.rpc.overflowed == 0


def test_a_per_model_policy_exports_each_model_under_its_own_attributes() -> None:
    policy = Policy(
        "per-model", per=("model",), caps=((Dimension.TOTAL_TOKENS, 1000),), export_ledgers=True
    )
    driven = Driven((policy,), TelemetrySettings())
    for i, model in enumerate(("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5")):
        driven.consume(f"c{i}", {"agent": "a"}, _usage(model, 10 * (i + 1), 0))
    points = driven.recorder.ledgers.points(lambda key: driven.engine.get_ledger(key, NOW))
    assert sorted((p[0]["gen_ai.request.model"], p[1]) for p in points) == [
        ("claude-sonnet-4-5", 30),
        ("gpt-4o", 10),
        ("gpt-4o-mini", 20),
    ]


def test_a_late_commit_counts_as_expired_only() -> None:
    driven = Driven(default_policies(), TelemetrySettings())
    held = driven.apply(
        "reserve",
        labels={"agent": "a", "thread": "t"},
        estimate=_usage("gpt-4o", 10, 0),
        ttl_s=1.0,
        request_id="r1",
        run_id="",
    )
    driven.runtime.clock = lambda: NOW + 5  # past the hold's ttl
    driven.apply("expire")
    late = driven.apply(
        "commit", reservation_id=held.reservation_id, actual=_usage("gpt-4o", 10, 0), request_id="c"
    )
    assert late.late
    assert driven.recorder.reservations == {
        "granted": 1,
        "committed": 0,
        "released": 0,
        "expired": 1,
    }


def test_the_sdk_folds_nothing_below_budgetds_own_caps() -> None:
    """The SDK caps each instrument at 2000 attribute sets unless told; budgetd's series
    make up to five points each (token types and parts), so the readers are told more."""
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 (loads the SDK)
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    from budgetd.telemetry.exporters import cardinality_limits  # noqa: PLC0415
    from budgetd.telemetry.instruments import Gauges, register  # noqa: PLC0415

    settings = TelemetrySettings()
    driven = Driven(default_policies(), settings)
    for i in range(1500):
        driven.consume(f"c{i}", {"agent": "a", "tenant": f"t{i}"}, _usage("gpt-4o", 1, 1))
    reader = InMemoryMetricReader(cardinality_limits=cardinality_limits(settings))
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    zero = lambda: 0  # noqa: E731
    gauges = Gauges(zero, zero, zero, zero, zero, zero, lambda: 0.0, dict, list)
    register(provider.get_meter("budgetd"), driven.recorder, gauges)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    (scope,) = data.resource_metrics[0].scope_metrics
    parts = next(m for m in scope.metrics if m.name == "budgetd.token.parts")
    assert len(parts.data.data_points) == 3 * 1500
    assert not any("otel.metric.overflow" in (p.attributes or {}) for p in parts.data.data_points)


def test_an_otlp_variable_the_sdk_cannot_read_stops_the_start_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from budgetd.telemetry.pipeline import Telemetry, TelemetryError  # noqa: PLC0415

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "zstdx")
    driven = Driven(default_policies(), TelemetrySettings())
    telemetry = Telemetry(TelemetrySettings(exporters=("otlp",)), driven.runtime, "test")

    async def start() -> None:
        try:
            telemetry.start()
        finally:
            await telemetry.stop()

    with pytest.raises(TelemetryError, match="OTLP exporter"):
        asyncio.run(start())
