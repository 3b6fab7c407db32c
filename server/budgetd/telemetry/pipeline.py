"""The metrics pipeline of one daemon: recorder, instruments, readers, and their hooks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.sdk.resources import OTELResourceDetector, Resource

from budgetd.core import events as ev
from budgetd.core.engine import Engine
from budgetd.logs import fields
from budgetd.telemetry.exported_ledgers import LedgerPoint
from budgetd.telemetry.exporters import (
    SCOPE,
    ForkFreeMeterProvider,
    PrometheusEndpoint,
    periodic_readers,
    quiet_sdk_logs,
)
from budgetd.telemetry.instruments import Gauges, Histograms, register
from budgetd.telemetry.recorder import Recorder
from budgetd.telemetry.rpc import RpcMetrics
from budgetd.telemetry.settings import TelemetrySettings

if TYPE_CHECKING:
    from budgetd.runtime import Runtime

log = logging.getLogger("budgetd.telemetry")
T = TypeVar("T")


class TelemetryError(Exception):
    """The pipeline cannot be built from the settings (the daemon says why at start)."""


POLICY_OPS = frozenset({"put_policy", "delete_policy", "replace_policies"})
# How long a collection thread waits for the event loop to read per-ledger values;
# a loop that busy (or gone, at exit) gives an empty reading, never a stuck exporter.
LOOP_WAIT_S = 2.0
LEDGER_READING_S = 1.0  # one reading serves the four per-ledger gauges of a collection
SHUTDOWN_MS = 5_000  # the final export at exit, at most


class Telemetry:
    def __init__(self, settings: TelemetrySettings, runtime: Runtime, version: str) -> None:
        self.settings = settings
        self.runtime = runtime
        self.recorder = Recorder(settings)
        self.rpc = RpcMetrics(self.recorder)  # wraps every handler at registration
        self.histograms = Histograms(self.recorder)
        self.prometheus: PrometheusEndpoint | None = None
        self.version = version
        self._provider: ForkFreeMeterProvider | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # Ledgers the engine had created when recording began (None: not yet attached).
        self._created_baseline: dict[str, int] | None = None
        self._reading: tuple[float, list[LedgerPoint]] = (0.0, [])
        self._undo_logs = quiet_sdk_logs(settings.export_interval_s)
        self._allowed = frozenset(settings.attributes)
        self._failures: set[str] = set()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> list[str]:
        """Build the pipeline and open the Prometheus endpoint (OSError when it cannot
        bind). Returns what it exports to, for the start-up log."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            readers = periodic_readers(self.settings, self.histograms)
        except Exception as error:  # the SDK read one of its OTEL_EXPORTER_OTLP_* badly
            raise TelemetryError(f"cannot build the OTLP exporter: {error}") from None
        targets = [name for name in self.settings.exporters if name != "prometheus"]
        if "prometheus" in self.settings.exporters:
            self.prometheus = PrometheusEndpoint(self.settings, self.histograms)
            readers.append(self.prometheus.reader)
        self._provider = ForkFreeMeterProvider(
            metric_readers=readers, resource=self._resource(), shutdown_on_exit=False
        )
        register(self._provider.get_meter(SCOPE, self.version), self.recorder, self._gauges())
        if self.prometheus is not None:
            targets.append(f"prometheus=http://{self.prometheus.start()}/metrics")
        return targets

    def attach(self) -> None:
        """Start recording (after recovery: what replay rebuilt is not new activity)."""
        runtime = self.runtime
        self._created_baseline = dict(runtime.engine.ledgers_created)
        self.recorder.ledgers.use_policies(runtime.engine.policies, self._allowed)
        runtime.on_applied = self._applied
        runtime.on_checked = self._checked
        runtime.on_snapshot = self._snapshot_written
        store = runtime.store
        if store is not None and store.journal is not None:
            store.journal.on_fsync = self._fsynced

    async def stop(self) -> None:
        """A last export, then close everything (bounded: a dead collector cannot hold
        the exit for long, and a failed last export is a log line, not a failed exit)."""
        provider, self._provider = self._provider, None
        try:
            if provider is not None:
                await asyncio.to_thread(provider.shutdown, timeout_millis=SHUTDOWN_MS)
        except Exception as error:  # e.g. the OTLP export used the whole deadline
            log.warning("metrics: last export incomplete", extra=fields(error=str(error)))
        finally:
            if self.prometheus is not None:
                await asyncio.to_thread(self.prometheus.stop)
            self._undo_logs()

    # --- what the runtime calls ---------------------------------------------------------

    def _applied(
        self, op: str, args: Mapping[str, Any], result: Any, events: list[ev.Event]
    ) -> None:
        try:
            self.recorder.applied(op, args, result, events)
            if op in POLICY_OPS:
                self.recorder.ledgers.use_policies(self.runtime.engine.policies, self._allowed)
        except Exception:  # a telemetry bug must never fail a call that counted
            self._failed("applied")

    def _checked(self, result: Any, labels: Mapping[str, str]) -> None:
        try:
            self.recorder.checked(result, labels)
        except Exception:
            self._failed("checked")

    def _snapshot_written(self, seconds: float) -> None:
        try:
            self.recorder.snapshot_written(seconds)
        except Exception:
            self._failed("snapshot_written")

    def _fsynced(self, seconds: float, records: int) -> None:
        try:  # on the journal's writer thread: an exception there would fail the write
            self.recorder.fsynced(seconds, records)
        except Exception:
            self._failed("fsynced")

    def _failed(self, where: str) -> None:
        if where not in self._failures:  # once per hook: the next call would log again
            self._failures.add(where)
            log.exception("telemetry hook failed; counts may be missing", extra=fields(hook=where))

    # --- what a collection reads ---------------------------------------------------------

    def _resource(self) -> Resource:
        s = self.settings
        base = Resource(
            {
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
                **dict(s.resource_attributes),
                "service.name": s.service_name,
                "service.version": self.version,
                "service.instance.id": str(uuid.uuid4()),
            }
        )
        # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over the file.
        return base.merge(OTELResourceDetector().detect())

    def _gauges(self) -> Gauges:
        runtime = self.runtime

        def engine() -> Engine:
            return runtime.engine

        def backlog() -> int:
            store = runtime.store
            journal = store.journal if store is not None else None
            return journal.last_lsn - journal.durable_lsn if journal is not None else 0

        def depth() -> int:
            events = runtime.events
            return max(0, events.last_seq - events.oldest_seq + 1)

        return Gauges(
            ledgers=lambda: engine().ledger_count,
            reservations=lambda: engine().reservation_count,
            runs=lambda: engine().run_count,
            subscribers=lambda: runtime.events.subscriber_count,
            event_log_depth=depth,
            journal_backlog=backlog,
            idempotency_window_s=self._idempotency_window,
            ledgers_created=self._ledgers_created,
            ledger_points=self._ledger_points,
        )

    def _idempotency_window(self) -> float:
        runtime = self.runtime  # the engine walks its memory: read on the loop
        return self._on_loop(lambda: runtime.engine.idempotency_window(runtime.clock()), 0.0)

    def _ledgers_created(self) -> dict[str, int]:
        base = self._created_baseline
        if base is None:  # recovery is replaying: nothing created yet
            return {}
        created = dict(self.runtime.engine.ledgers_created)
        return {p: n - base.get(p, 0) for p, n in created.items() if n > base.get(p, 0)}

    def _ledger_points(self) -> list[LedgerPoint]:
        """Per-ledger values, read on the event loop (the engine is the loop's)."""
        ledgers = self.recorder.ledgers
        if not len(ledgers):
            return []
        taken, points = self._reading
        if time.monotonic() - taken < LEDGER_READING_S:
            return points
        runtime = self.runtime

        def read() -> list[LedgerPoint]:
            now = runtime.clock()
            return ledgers.points(lambda key: runtime.engine.get_ledger(key, now))

        points = self._on_loop(read, [])
        self._reading = (time.monotonic(), points)
        return points

    def _on_loop(self, read: Callable[[], T], otherwise: T) -> T:
        """`read()` on the event loop (the engine is the loop's alone), from whichever
        thread collects; `otherwise` when the loop cannot answer in time."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return read()

        async def run() -> T:
            return read()

        try:
            pending = asyncio.run_coroutine_threadsafe(run(), loop)
        except RuntimeError:  # the loop is closed (exit)
            return otherwise
        try:
            return pending.result(LOOP_WAIT_S)
        except Exception as error:  # a stalled loop: no reading this time, none queued
            pending.cancel()
            log.warning("metrics not read from the engine", extra=fields(error=repr(error)))
            return otherwise
