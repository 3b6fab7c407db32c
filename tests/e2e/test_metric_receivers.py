"""Goal: the metric receivers the daemon's telemetry tests rely on work, against real peers
and without the daemon, so a failure there is the daemon's and never the fixture's.

- The OpenTelemetry SDK's own OTLP exporters (gRPC, and HTTP with each compression)
  reach `GrpcReceiver` / `HttpReceiver` with the headers `OTEL_EXPORTER_OTLP_HEADERS`
  names, and `latest_points` reads back each metric's name, unit, kind, resource,
  attributes and value exactly, taking the newest cumulative point and not a sum of
  exports.
- `PrometheusServer` (Debian's real `prometheus`) scrapes a `prometheus_client` endpoint
  the test starts, reports the target up, answers PromQL with the counter's value,
  gives Prometheus's own error text for a bad query, and loads and fires an alert rule.

Every wait is on a condition: `force_flush` returns once the export was answered, and
Prometheus is polled (`wait_until`) until it has seen what the test set.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests import prometheus_server
from tests.otlp_receiver import (
    Attributes,
    GrpcReceiver,
    HttpReceiver,
    latest_points,
    matching,
    series_count,
    value,
)
from tests.prometheus_server import PrometheusError, PrometheusServer
from tests.waiting import wait_until

OK: Attributes = {"budgetd.outcome": "ok", "retried": False, "code": 7}
DENIED: Attributes = {"budgetd.outcome": "denied", "retried": True, "code": 9}
BOUNDS = (0.1, 1.0, 10.0)
HOUR_MS = 3_600_000  # the reader's own timer never fires: the test flushes


@pytest.fixture(autouse=True)
def otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables set here reach the exporters, whatever the shell exported."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-test-tenant=acme,authorization=Bearer%20s3")


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    with GrpcReceiver() as receiver:
        yield receiver


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


def export_known_values(exporter: MetricExporter) -> None:
    """Two exports: the counter at 3 (ok) and 2 (denied), then ok at 7; a histogram of
    0.05 and 2.5; a gauge at 1.5. The provider is shut down before the receiver stops."""
    resource = Resource.create({"service.name": "receiver-test", "budgetd.instance": "i-1"})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=HOUR_MS)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    try:
        meter = provider.get_meter("tests.receivers")
        requests = meter.create_counter("test.requests", unit="{request}")
        latency = meter.create_histogram(
            "test.latency", unit="s", explicit_bucket_boundaries_advisory=list(BOUNDS)
        )
        depth = meter.create_gauge("test.depth", unit="{item}")
        requests.add(3, OK)
        requests.add(2, DENIED)
        latency.record(0.05, OK)
        latency.record(2.5, OK)
        depth.set(1.5)
        assert provider.force_flush()
        requests.add(4, OK)
        assert provider.force_flush()
    finally:
        provider.shutdown()


def check_known_values(receiver: GrpcReceiver | HttpReceiver) -> None:
    # Two flushes, then the shutdown's own final export.
    assert receiver.count() == 3
    metrics = receiver.latest()
    assert set(metrics) == {"test.requests", "test.latency", "test.depth"}

    counter = metrics["test.requests"]
    assert (counter.unit, counter.kind, counter.is_monotonic, counter.temporality) == (
        "{request}",
        "sum",
        True,
        "cumulative",
    )
    assert counter.resource["service.name"] == "receiver-test"
    assert counter.resource["budgetd.instance"] == "i-1"
    assert value(metrics, "test.requests", {"budgetd.outcome": "ok"}) == 7  # newest, not 3 + 7
    backwards = latest_points(reversed(receiver.requests))  # by time_unix_nano, not arrival
    assert value(backwards, "test.requests", {"budgetd.outcome": "ok"}) == 7
    assert value(metrics, "test.requests", {"budgetd.outcome": "denied"}, code=9) == 2
    assert value(metrics, "test.requests") == 9
    assert value(metrics, "test.requests", code=8) == 0
    assert value(metrics, "never.sent") == 0
    [ok] = matching(metrics, "test.requests", {"budgetd.outcome": "ok"})
    assert ok.attributes == OK
    assert type(ok.value) is int

    histogram = metrics["test.latency"]
    assert (histogram.unit, histogram.kind, histogram.temporality) == (
        "s",
        "histogram",
        "cumulative",
    )
    [point] = histogram.points
    assert point.attributes == OK
    assert (point.count, point.value) == (2, 0.05 + 2.5)
    assert point.explicit_bounds == BOUNDS
    assert point.bucket_counts == (1, 0, 1, 0)

    gauge = metrics["test.depth"]
    assert (gauge.unit, gauge.kind, gauge.temporality) == ("{item}", "gauge", None)
    assert value(metrics, "test.depth") == 1.5
    assert gauge.points[0].attributes == {}

    assert series_count(metrics) == 4
    assert series_count(metrics, "test.requests") == 2
    assert series_count(metrics, "never.sent") == 0

    for headers in receiver.headers:
        assert headers["x-test-tenant"] == "acme"
        assert headers["authorization"] == "Bearer s3"


def test_grpc_receiver_reads_the_sdk_exporter(
    grpc_receiver: GrpcReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_receiver.endpoint)
    exporter = GrpcMetricExporter(compression=grpc.Compression.Gzip)
    export_known_values(exporter)
    check_known_values(grpc_receiver)


@pytest.mark.parametrize(
    ("compression", "encoding"),
    [
        (HttpCompression.NoCompression, None),
        (HttpCompression.Gzip, "gzip"),
        (HttpCompression.Deflate, "deflate"),
    ],
)
def test_http_receiver_reads_the_sdk_exporter(
    http_receiver: HttpReceiver,
    compression: HttpCompression,
    encoding: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.base)  # + /v1/metrics
    exporter = HttpMetricExporter(compression=compression)
    export_known_values(exporter)
    check_known_values(http_receiver)
    for headers in http_receiver.headers:
        assert headers["content-type"] == "application/x-protobuf"
        assert headers.get("content-encoding") == encoding


def test_http_receiver_answers_only_its_path(http_receiver: HttpReceiver) -> None:
    def status(url: str, content_type: str) -> int:
        request = urllib.request.Request(
            url, data=b"{}", headers={"Content-Type": content_type}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            error.close()
            return error.code

    assert status(f"{http_receiver.base}/v1/traces", "application/x-protobuf") == 404
    assert status(http_receiver.endpoint, "application/json") == 415
    assert status(http_receiver.endpoint, "application/x-protobuf") == 400  # not protobuf
    assert http_receiver.count() == 0


ALERT = """\
groups:
  - name: receiver-test
    rules:
      - alert: ReceiverTestEventsSeen
        expr: receiver_test_events_total > 0
        labels:
          severity: info
"""


def test_prometheus_scrapes_a_prometheus_client_endpoint(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    events = Counter(
        "receiver_test_events", "Events the test counted.", ["kind"], registry=registry
    )
    events.labels(kind="spent").inc(42)
    (tmp_path / "alerts.yml").write_text(ALERT)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    target = f"127.0.0.1:{server.server_port}"
    try:
        with PrometheusServer(tmp_path, [target], rule_files=["alerts.yml"]) as prometheus:
            wait_until(prometheus.targets_up, f"{target} scraped: {prometheus.targets()}")
            labels, seen = prometheus.wait_for_value(
                'receiver_test_events_total{kind="spent"}', lambda v: v == 42, "the counter"
            )
            assert seen == 42
            assert (labels["job"], labels["instance"], labels["kind"]) == (
                "budgetd",
                target,
                "spent",
            )
            assert prometheus.query("sum(receiver_test_events_total)") == [({}, 42.0)]
            assert prometheus.query("scalar(sum(receiver_test_events_total))") == [({}, 42.0)]
            with pytest.raises(PrometheusError, match=r"bad_data: .*parse error"):
                prometheus.query("sum(")

            [rule] = prometheus.rules()
            assert (rule["name"], rule["labels"]) == (
                "ReceiverTestEventsSeen",
                {"severity": "info"},
            )
            wait_until(
                lambda: prometheus.rules()[0]["state"] == "firing",
                f"the alert fires: {prometheus.rules()}",
            )
        assert prometheus.process.returncode == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_prometheus_retries_a_port_taken_before_it_binds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free port is picked then closed, so another process may bind it first: the
    start that fails on it ("address already in use") is retried on another port. (Bound,
    not listening: a listener would hold each `/-/ready` poll for its whole bound.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        ports = [int(taken.getsockname()[1])]
        real = prometheus_server._free_port
        monkeypatch.setattr(
            prometheus_server, "_free_port", lambda: ports.pop() if ports else real()
        )
        with PrometheusServer(tmp_path, []) as prometheus:
            assert prometheus.port != taken.getsockname()[1]
            assert prometheus.query("vector(1)") == [({}, 1.0)]
    log = prometheus.log()
    assert log.count("address already in use") == 1, log


def test_prometheus_missing_names_the_ci_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"\.ci/run.*prometheus"):
        PrometheusServer(tmp_path, ["127.0.0.1:1"])
