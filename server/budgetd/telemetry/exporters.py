"""The readers and exporters: OTLP (gRPC or HTTP/protobuf), Prometheus, console.

Everything here runs off the event loop: the periodic reader exports from its own
thread, the Prometheus endpoint answers scrapes from its own HTTP server thread. A
collector that is down or slow costs those threads time, never a call: a failure is
logged once per export interval (`OnceEvery`), not per call or per retry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpExporter,
)
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter, ObservableGauge
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.metrics_core import Metric

from budgetd.logs import fields
from budgetd.telemetry.instruments import Histograms
from budgetd.telemetry.settings import TelemetrySettings

log = logging.getLogger("budgetd.telemetry")
SCOPE = "budgetd"


class OnceEvery(logging.Filter):
    """Lets one record per OpenTelemetry logger through every `interval_s` (the SDK's
    exporters log each failed attempt and each retry: a down collector must not flood
    the log). Other records pass untouched."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("opentelemetry"):
            return True
        now = time.monotonic()
        last = self._last.get(record.name)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[record.name] = now
        return True


def with_histograms(metrics_data: MetricsData, histograms: Histograms) -> MetricsData:
    """The collection with the histograms added to budgetd's scope."""
    extra = histograms.metrics()
    if not extra or not metrics_data.resource_metrics:
        return metrics_data
    first, *rest = metrics_data.resource_metrics
    scopes = list(first.scope_metrics)
    for i, scope in enumerate(scopes):
        if scope.scope.name == SCOPE:
            scopes[i] = ScopeMetrics(scope.scope, [*scope.metrics, *extra], scope.schema_url)
            break
    else:  # pragma: no cover - budgetd's observable instruments always report
        return metrics_data
    return MetricsData([ResourceMetrics(first.resource, scopes, first.schema_url), *rest])


def cardinality_limits(settings: TelemetrySettings) -> dict[type, int]:
    """The SDK's own cap per instrument (2000 attribute sets unless told), above what
    budgetd's caps can produce: budgetd bounds the series itself (`max_series`, with its
    overflow series and counter), and an SDK cap below would fold them again, silently.
    A usage series makes five points (two token types, three parts), a ledger one per
    capped dimension (at most eight)."""
    limit = 8 * (max(settings.max_series, settings.max_ledger_series) + 1)
    return {kind: limit for kind in (ObservableCounter, ObservableGauge)}


class PeriodicReader(PeriodicExportingMetricReader):
    def __init__(self, exporter: MetricExporter, histograms: Histograms, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self._histograms = histograms

    def _at_fork_reinit(self) -> None:
        """Nothing: see `ForkFreeMeterProvider` (no exporter thread in the snapshot child)."""

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        if metrics_data is not None:
            metrics_data = with_histograms(metrics_data, self._histograms)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)


class ForkFreeMeterProvider(MeterProvider):
    """The SDK's provider without its after-fork work. The daemon's only fork is the
    snapshot writer (`budgetd.persistence.snapshot`), a child that writes one file and
    exits; the SDK's handler would detect resources on a thread pool there, and that was
    seen to hang the child (a snapshot that never ends)."""

    def _handle_fork(self) -> None:
        return None


class Reporting(MetricExporter):
    """An exporter that says once per failure streak what went wrong, and when it
    works again."""

    def __init__(self, inner: MetricExporter, name: str, where: str) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner, self.name, self.where = inner, name, where
        self.failures = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as error:  # an exporter bug must not end the reader's thread
            log.warning("metrics export raised", extra=fields(exporter=self.name, error=str(error)))
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            if self.failures:
                log.info(
                    "metrics export works again",
                    extra=fields(exporter=self.name, endpoint=self.where, failed=self.failures),
                )
            self.failures = 0
        else:
            self.failures += 1
            log.warning(
                "metrics export failed; the next try is at the next interval",
                extra=fields(exporter=self.name, endpoint=self.where, failures=self.failures),
            )
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def otlp_exporter(settings: TelemetrySettings) -> tuple[MetricExporter, str]:
    """The OTLP exporter the settings ask for, and where it sends (for the log)."""
    from_env = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    endpoint, headers, timeout = (
        settings.otlp_endpoint,
        dict(settings.otlp_headers) if settings.otlp_headers is not None else None,
        settings.otlp_timeout_s,
    )
    if settings.otlp_protocol == "grpc":
        return GrpcExporter(endpoint=endpoint, headers=headers, timeout=timeout), (
            endpoint or from_env or "http://localhost:4317"
        )
    url = endpoint.rstrip("/") + "/v1/metrics" if endpoint else None
    if url is None and from_env and "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" not in os.environ:
        from_env = from_env.rstrip("/") + "/v1/metrics"  # the SDK adds it to a base URL
    return HttpExporter(endpoint=url, headers=headers, timeout=timeout), (
        url or from_env or "http://localhost:4318/v1/metrics"
    )


def periodic_readers(settings: TelemetrySettings, histograms: Histograms) -> list[MetricReader]:
    interval_ms = settings.export_interval_s * 1000
    timeout_ms = settings.export_timeout_s * 1000
    readers: list[MetricReader] = []
    for name in settings.exporters:
        exporter: MetricExporter
        if name == "otlp":
            inner, where = otlp_exporter(settings)
            exporter = Reporting(inner, f"otlp/{settings.otlp_protocol}", where)
        elif name == "console":
            exporter = ConsoleMetricExporter()
        else:
            continue
        readers.append(
            PeriodicReader(
                exporter,
                histograms,
                export_interval_millis=interval_ms,
                export_timeout_millis=timeout_ms,
                cardinality_limits=cardinality_limits(settings),
            )
        )
    return readers


class OneScrapeAtATime(CollectorRegistry):
    """Scrapes one after another: the SDK's Prometheus collector hands each collection
    over through one shared queue, and two scrapes at once (two Prometheus servers) could
    take each other's data, leaving one with nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._scraping = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._scraping:
            found = list(super().collect())
        yield from found


class PrometheusEndpoint:
    """The scrape endpoint: its reader and its HTTP server thread."""

    def __init__(self, settings: TelemetrySettings, histograms: Histograms) -> None:
        class Reader(PrometheusMetricReader):
            def _receive_metrics(
                self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
            ) -> None:
                if metrics_data is not None:
                    metrics_data = with_histograms(metrics_data, histograms)
                super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

        self.registry = OneScrapeAtATime()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, RSS, fds
        self.reader: MetricReader = Reader(
            registry=self.registry, cardinality_limits=cardinality_limits(settings)
        )
        self.host, self.port = settings.prometheus_host, settings.prometheus_port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Listen; returns "host:port" (the port resolved when 0 was asked). OSError
        when the address cannot be bound."""
        self._server, self._thread = start_http_server(
            self.port, addr=self.host, registry=self.registry
        )
        self.port = self._server.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def quiet_sdk_logs(interval_s: float) -> Callable[[], None]:
    """Rate-limit the SDK's own log lines at the root handlers (a logger's filter does
    not see its children's records); returns how to undo it."""
    once = OnceEvery(interval_s)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(once)

    def undo() -> None:
        for handler in handlers:
            handler.removeFilter(once)

    return undo
