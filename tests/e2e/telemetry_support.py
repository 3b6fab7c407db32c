"""Helpers of the daemon's telemetry tests (tests/e2e/test_telemetry.py).

- `free_port()`: a loopback port nobody listens on (bound, then closed).
- `GrpcReceiverOn(port)`: the OTLP/gRPC receiver of tests/otlp_receiver.py on a port
  the test chose, so a collector can come up where the daemon has been sending all
  along.
- `scrape(url)`: the daemon's Prometheus endpoint read once, as samples per family.
- `ledgers(budget, policy, label)`: GetLedger of every ledger of a policy, by a `per` label.
"""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from budgetd.v1 import budget_pb2 as pb
from tests.otlp_receiver import _MetricsService, _Received

WAIT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def refuses(port: int) -> bool:
    """Nothing accepts a TCP connection on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(WAIT_S)
        return probe.connect_ex(("127.0.0.1", port)) != 0


class GrpcReceiverOn(_Received):
    """`GrpcReceiver`, bound to a given port of 127.0.0.1 (RuntimeError if taken)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc-on")
        self._server = grpc.server(self._executor)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsService(self), self._server
        )
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        if self.port != port:
            raise RuntimeError(f"127.0.0.1:{port} could not be bound (got {self.port})")
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
        self._executor.shutdown(wait=True)


def prometheus_url(ready: dict[str, Any]) -> str:
    """The scrape URL of the "ready" log's `metrics` field ("otlp,prometheus=http://...")."""
    for part in str(ready["metrics"]).split(","):
        name, _, url = part.partition("=")
        if name == "prometheus":
            return url
    raise AssertionError(f"no prometheus endpoint in the ready log: {ready['metrics']!r}")


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """One scrape of the endpoint: each sample name's (labels, value) pairs."""
    with urllib.request.urlopen(url, timeout=WAIT_S) as answer:
        text = answer.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def series_per_name(samples: dict[str, list[tuple[dict[str, str], float]]]) -> Counter[str]:
    return Counter({name: len(found) for name, found in samples.items()})


def ledgers(budget: Any, policy: str, label: str) -> dict[str, pb.LedgerStatus]:
    """Every ledger of `policy` as GetLedger reports it (the keys from ListLedgers), by
    the value of its label `label` (a `per` key)."""
    found: dict[str, pb.LedgerStatus] = {}
    token = ""
    while True:
        page = budget.ListLedgers(
            pb.ListLedgersRequest(policy=policy, page_size=1000, page_token=token),
            timeout=WAIT_S,
        )
        for ledger in page.ledgers:
            got = budget.GetLedger(pb.GetLedgerRequest(key=ledger.key), timeout=WAIT_S)
            found[ledger.labels[label]] = got.ledger
        token = page.next_page_token
        if not token:
            return found
