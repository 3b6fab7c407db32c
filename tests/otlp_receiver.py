"""Real OTLP metric receivers a test starts on loopback, and pure readers of what arrived.

`GrpcReceiver` serves the OTLP/gRPC `MetricsService.Export`; `HttpReceiver` serves
OTLP/HTTP `POST /v1/metrics` (binary protobuf, optionally gzip or deflate). Each binds a
free port, keeps every `ExportMetricsServiceRequest` it received with the headers it came
with, and answers success. A test waits on what arrived (`wait_for`), never for a time.

`latest_points(requests)` reads the requests as the daemon means them: it exports
cumulative values, so for each (metric name, attribute set) the data point with the
newest `time_unix_nano` is the total. `value()` and `series_count()` read that result.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tests.waiting import wait_until

Value = str | int | float | bool
Attributes = dict[str, Value]
Kind = Literal["sum", "gauge", "histogram"]
Temporality = Literal["unspecified", "delta", "cumulative"]

WAIT_S = 30.0
_TEMPORALITY: dict[int, Temporality] = {
    metrics_pb2.AGGREGATION_TEMPORALITY_UNSPECIFIED: "unspecified",
    metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
    metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}


@dataclass(frozen=True)
class Point:
    """One data point. `value`: a sum's or gauge's value, a histogram's sum; `count`,
    `bucket_counts` and `explicit_bounds` are a histogram's (0 and empty otherwise)."""

    attributes: Attributes
    time_unix_nano: int
    value: float
    count: int = 0
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()


@dataclass(frozen=True)
class Metric:
    """A metric as last exported: `points` holds the newest point of each attribute set;
    unit, kind, temporality and resource are those of the newest request naming it.
    `is_monotonic` is False and `temporality` None for a gauge."""

    name: str
    unit: str
    kind: Kind
    is_monotonic: bool
    temporality: Temporality | None
    resource: Attributes
    points: tuple[Point, ...]


def plain(value: AnyValue) -> Value:
    """An OTLP attribute value as Python's; arrays, maps and bytes (which the daemon
    never sends) raise ValueError rather than read as something else."""
    field = value.WhichOneof("value")
    if field == "string_value":
        return value.string_value
    if field == "bool_value":
        return value.bool_value
    if field == "int_value":
        return value.int_value
    if field == "double_value":
        return value.double_value
    raise ValueError(f"attribute value of kind {field!r} is not read here: {value}")


def attributes(pairs: Iterable[KeyValue]) -> Attributes:
    return {pair.key: plain(pair.value) for pair in pairs}


def _number(point: metrics_pb2.NumberDataPoint) -> float:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double


def _frozen(attrs: Attributes) -> frozenset[tuple[str, Value]]:
    return frozenset(attrs.items())


def latest_points(requests: Iterable[ExportMetricsServiceRequest]) -> dict[str, Metric]:
    """Every metric name seen in `requests`, with the newest point of each attribute set
    (ties go to the later request). Exponential histograms and summaries raise
    ValueError: the daemon sends neither, so meeting one is a finding."""
    shapes: dict[str, tuple[int, str, Kind, bool, Temporality | None, Attributes]] = {}
    newest: dict[str, dict[frozenset[tuple[str, Value]], Point]] = {}
    for request in requests:
        for resource_metrics in request.resource_metrics:
            resource = attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points, shape = _read(metric)
                    series = newest.setdefault(metric.name, {})
                    stamp = max((p.time_unix_nano for p in points), default=0)
                    if metric.name not in shapes or stamp >= shapes[metric.name][0]:
                        shapes[metric.name] = (stamp, metric.unit, *shape, resource)
                    for point in points:
                        key = _frozen(point.attributes)
                        seen = series.get(key)
                        if seen is None or point.time_unix_nano >= seen.time_unix_nano:
                            series[key] = point
    return {
        name: Metric(
            name=name,
            unit=unit,
            kind=kind,
            is_monotonic=monotonic,
            temporality=temporality,
            resource=resource,
            points=tuple(newest[name].values()),
        )
        for name, (_, unit, kind, monotonic, temporality, resource) in shapes.items()
    }


def _read(
    metric: metrics_pb2.Metric,
) -> tuple[list[Point], tuple[Kind, bool, Temporality | None]]:
    data = metric.WhichOneof("data")
    if data == "sum":
        points = [
            Point(attributes(p.attributes), p.time_unix_nano, _number(p))
            for p in metric.sum.data_points
        ]
        return points, (
            "sum",
            metric.sum.is_monotonic,
            _TEMPORALITY[metric.sum.aggregation_temporality],
        )
    if data == "gauge":
        points = [
            Point(attributes(p.attributes), p.time_unix_nano, _number(p))
            for p in metric.gauge.data_points
        ]
        return points, ("gauge", False, None)
    if data == "histogram":
        points = [
            Point(
                attributes(p.attributes),
                p.time_unix_nano,
                p.sum,
                count=p.count,
                bucket_counts=tuple(p.bucket_counts),
                explicit_bounds=tuple(p.explicit_bounds),
            )
            for p in metric.histogram.data_points
        ]
        return points, (
            "histogram",
            False,
            _TEMPORALITY[metric.histogram.aggregation_temporality],
        )
    raise ValueError(f"metric {metric.name!r} has data {data!r}, which is not read here")


def matching(
    metrics: Mapping[str, Metric],
    name: str,
    attrs: Mapping[str, Value] | None = None,
    /,
    **more: Value,
) -> list[Point]:
    """The newest points of metric `name` whose attributes include `attrs` and `more`
    (`attrs` for names with dots: `{"budgetd.outcome": "ok"}`); none if it never came."""
    wanted = {**(attrs or {}), **more}
    metric = metrics.get(name)
    if metric is None:
        return []
    return [
        point
        for point in metric.points
        if all(key in point.attributes and point.attributes[key] == v for key, v in wanted.items())
    ]


def value(
    metrics: Mapping[str, Metric],
    name: str,
    attrs: Mapping[str, Value] | None = None,
    /,
    **more: Value,
) -> float:
    """The sum of the values (a histogram's: of the sums) of the matching newest points;
    0 when none match, so a test can wait for a value before the first export."""
    return sum(point.value for point in matching(metrics, name, attrs, **more))


def series_count(metrics: Mapping[str, Metric], name: str | None = None) -> int:
    """How many (metric name, attribute set) series there are: of every metric, or of `name`."""
    if name is not None:
        return len(metrics[name].points) if name in metrics else 0
    return sum(len(metric.points) for metric in metrics.values())


class _Received(ABC):
    """The requests and headers one receiver got, behind a lock (handlers run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[ExportMetricsServiceRequest] = []
        self._headers: list[dict[str, str]] = []

    def record(self, request: ExportMetricsServiceRequest, headers: dict[str, str]) -> None:
        with self._lock:
            self._requests.append(request)
            self._headers.append(headers)

    @property
    def requests(self) -> list[ExportMetricsServiceRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        """The headers (lowercase names) of each request, in the order of `requests`."""
        with self._lock:
            return [dict(h) for h in self._headers]

    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def latest(self) -> dict[str, Metric]:
        """`latest_points` of everything received so far."""
        return latest_points(self.requests)

    def wait_for(
        self, condition: Callable[[], bool], what: str, *, limit_s: float = WAIT_S
    ) -> None:
        wait_until(condition, what, limit_s=limit_s)

    @abstractmethod
    def stop(self) -> None:
        """Stop listening (each receiver stops its own server)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: _Received) -> None:
        self._received = received

    def Export(  # noqa: N802 -- the RPC's name
        self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> ExportMetricsServiceResponse:
        headers = {
            key: val if isinstance(val, str) else val.decode("latin-1")
            for key, val in context.invocation_metadata()
        }
        self._received.record(request, headers)
        return ExportMetricsServiceResponse()


class GrpcReceiver(_Received):
    """An OTLP/gRPC collector on 127.0.0.1 (plaintext), answering every Export with success."""

    def __init__(self) -> None:
        super().__init__()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc")
        self._server = grpc.server(self._executor)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsService(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        """What `OTEL_EXPORTER_OTLP_ENDPOINT` names for this receiver."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
        self._executor.shutdown(wait=True)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, received: _Received) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHttpHandler)
        self.received = received


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if urlsplit(self.path).path != "/v1/metrics":
            self._answer(404, b"not found", "text/plain")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/x-protobuf":
            self._answer(415, f"not read here: {content_type!r}".encode(), "text/plain")
            return
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding != "identity":
                self._answer(415, f"no encoding {encoding!r}".encode(), "text/plain")
                return
            request = ExportMetricsServiceRequest.FromString(body)
        except (OSError, EOFError, zlib.error, DecodeError) as error:
            self._answer(400, str(error).encode(), "text/plain")
            return
        headers = {key.lower(): val for key, val in self.headers.items()}
        self.server.received.record(request, headers)
        self._answer(200, ExportMetricsServiceResponse().SerializeToString(), content_type)

    def do_GET(self) -> None:
        self._answer(404, b"not found", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a test reads `requests`, not the access log."""


class HttpReceiver(_Received):
    """An OTLP/HTTP collector on 127.0.0.1: `POST /v1/metrics`, binary protobuf only
    (415 for JSON), gzip or deflate bodies; 404 for any other path."""

    def __init__(self) -> None:
        super().__init__()
        self._server = _HttpServer(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="otlp-http", daemon=True
        )
        self._thread.start()

    @property
    def base(self) -> str:
        """What `OTEL_EXPORTER_OTLP_ENDPOINT` names (the exporter appends /v1/metrics)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """What `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` names: the full signal URL."""
        return f"{self.base}/v1/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
