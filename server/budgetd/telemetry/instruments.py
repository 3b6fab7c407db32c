"""The instruments: counters and gauges observed from the series, histograms built.

Counters and gauges are the SDK's observable instruments, read at collection time from
the `Recorder`'s series (the SDK then does temporality, views and export as for any
instrument). Histograms have no observable form in OpenTelemetry, and the synchronous
one is too slow to call per request, so `Histograms.metrics` builds their points from
the series' buckets; the readers (`budgetd.telemetry.exporters`) add them to every
collection, always cumulative.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)

from budgetd.telemetry.exported_ledgers import LedgerPoint
from budgetd.telemetry.recorder import TOKEN_PARTS, Recorder, UsageSeries
from budgetd.telemetry.series import Buckets, Count, SeriesMap


@dataclass
class Gauges:
    """The daemon's current state, read when a collection asks (set by Telemetry)."""

    ledgers: Callable[[], int]
    reservations: Callable[[], int]
    runs: Callable[[], int]
    subscribers: Callable[[], int]
    event_log_depth: Callable[[], int]
    journal_backlog: Callable[[], int]
    idempotency_window_s: Callable[[], float]
    ledgers_created: Callable[[], dict[str, int]]
    ledger_points: Callable[[], list[LedgerPoint]]


def register(meter: Meter, recorder: Recorder, gauges: Gauges) -> None:
    """Every counter and gauge of the README's metric table, on `meter`."""
    _usage_instruments(meter, recorder)
    counted: tuple[tuple[str, str, str, SeriesMap[Count]], ...] = (
        ("budgetd.decisions", "{decision}", "decisions made", recorder.decisions),
        ("budgetd.thresholds.crossed", "{crossing}", "threshold crossings", recorder.crossings),
        ("budgetd.overruns", "{overrun}", "commits above their reservation", recorder.overruns),
        ("budgetd.runs.ended", "{run}", "runs ended, by reason", recorder.runs_ended),
        ("budgetd.ledgers.closed", "{ledger}", "ledgers closed, by reason", recorder.closed),
    )  # fmt: skip
    for name, unit, description, series in counted:
        meter.create_observable_counter(name, [_counts(series)], unit=unit, description=description)
    outcomes = recorder.reservations
    meter.create_observable_counter(
        "budgetd.reservations",
        [lambda _: [Observation(n, {"budgetd.outcome": o}) for o, n in outcomes.items()]],
        unit="{reservation}",
        description="reservations granted, committed, released and expired",
    )
    meter.create_observable_counter(
        "budgetd.runs.opened",
        [lambda _: [Observation(recorder.runs_opened)]],
        unit="{run}",
        description="runs opened",
    )
    created = gauges.ledgers_created
    meter.create_observable_counter(
        "budgetd.ledgers.created",
        [lambda _: [Observation(n, {"budgetd.policy": p}) for p, n in created().items()]],
        unit="{ledger}",
        description="ledgers created, by policy",
    )
    meter.create_observable_counter(
        "budgetd.telemetry.series.dropped",
        [lambda _: list(_dropped(recorder))],
        unit="{series}",
        description="attribute sets folded into an overflow series, ledgers not exported",
    )
    _state_gauges(meter, gauges)
    _ledger_gauges(meter, gauges)


def _usage_instruments(meter: Meter, recorder: Recorder) -> None:
    usage = recorder.usage

    def tokens(_: CallbackOptions) -> Iterator[Observation]:
        for s in usage.items():
            yield Observation(s.input, s.input_attributes)
            yield Observation(s.output, s.output_attributes)

    def parts(_: CallbackOptions) -> Iterator[Observation]:
        for s in usage.items():
            for part in TOKEN_PARTS:
                yield Observation(getattr(s, part), s.part_attributes[part])

    def of(read: Callable[[UsageSeries], float]) -> Callable[[CallbackOptions], list[Observation]]:
        return lambda _: [Observation(read(s), s.attributes) for s in usage.items()]

    meter.create_observable_counter(
        "budgetd.tokens", [tokens], unit="{token}", description="tokens recorded (input, output)"
    )
    meter.create_observable_counter(
        "budgetd.token.parts",
        [parts],
        unit="{token}",
        description="parts of input (cached, cache-write) and output (reasoning) tokens",
    )
    meter.create_observable_counter(
        "budgetd.cost",
        [of(lambda s: s.cost_micro_usd / 1_000_000)],
        unit="USD",
        description="cost recorded (unpriced usage adds nothing)",
    )
    meter.create_observable_counter(
        "budgetd.usage.records", [of(lambda s: s.records)], unit="{record}",
        description="usage records (Consume and Commit)",
    )  # fmt: skip
    meter.create_observable_counter(
        "budgetd.usage.unpriced", [of(lambda s: s.unpriced)], unit="{record}",
        description="usage records whose model has no price (cost unknown)",
    )  # fmt: skip


def _counts(series: SeriesMap[Count]) -> Callable[[CallbackOptions], list[Observation]]:
    return lambda _: [Observation(c.value, c.attributes) for c in series.items()]


def _dropped(recorder: Recorder) -> Iterator[Observation]:
    maps: tuple[SeriesMap[Any], ...] = (
        recorder.usage,
        recorder.decisions,
        recorder.crossings,
        recorder.closed,
        recorder.overruns,
        recorder.runs_ended,
        recorder.rpc,
    )
    for series in maps:
        if series.overflowed:
            yield Observation(series.overflowed, {"budgetd.metric": series.name})
    if recorder.ledgers.dropped:
        yield Observation(recorder.ledgers.dropped, {"budgetd.metric": "budgetd.ledger"})


def _state_gauges(meter: Meter, gauges: Gauges) -> None:
    for name, unit, description, read in (
        ("budgetd.ledgers", "{ledger}", "ledgers in memory", gauges.ledgers),
        ("budgetd.reservations.open", "{reservation}", "open reservations", gauges.reservations),
        ("budgetd.runs.open", "{run}", "open runs", gauges.runs),
        ("budgetd.subscribers", "{subscriber}", "Subscribe streams", gauges.subscribers),
        ("budgetd.event_log.depth", "{event}", "events kept for resuming", gauges.event_log_depth),
        ("budgetd.journal.backlog", "{record}", "records not yet durable", gauges.journal_backlog),
        ("budgetd.idempotency.window", "s", "retries known", gauges.idempotency_window_s),
    ):  # fmt: skip
        meter.create_observable_gauge(name, [_gauge(read)], unit=unit, description=description)


def _gauge(read: Callable[[], float]) -> Callable[[CallbackOptions], list[Observation]]:
    return lambda _: [Observation(read())]


def _ledger_gauges(meter: Meter, gauges: Gauges) -> None:
    for index, (name, unit, description) in enumerate(
        (
            ("budgetd.ledger.used", "{amount}", "used, in the dimension's unit"),
            ("budgetd.ledger.limit", "{amount}", "the cap, in the dimension's unit"),
            ("budgetd.ledger.remaining", "{amount}", "headroom left for new holds"),
            ("budgetd.ledger.utilization", "1", "used / limit"),
        ),
        start=1,
    ):
        meter.create_observable_gauge(
            name, [_ledger_values(gauges, index)], unit=unit, description=description
        )


def _ledger_values(gauges: Gauges, index: int) -> Callable[[CallbackOptions], list[Observation]]:
    return lambda _: [Observation(cast(float, p[index]), p[0]) for p in gauges.ledger_points()]


# --- histograms -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    name: str
    unit: str
    description: str
    series: Callable[[], Iterable[tuple[dict[str, Any], Buckets]]]


class Histograms:
    """The histogram metrics, as points of one collection."""

    def __init__(self, recorder: Recorder) -> None:
        self.started_ns = time.time_ns()
        r = recorder

        def tokens() -> Iterator[tuple[dict[str, Any], Buckets]]:
            for s in r.usage.items():
                yield s.input_attributes, s.input_buckets
                yield s.output_attributes, s.output_buckets

        self.families = (
            _Family("gen_ai.client.token.usage", "{token}", "tokens per usage record", tokens),
            _Family(
                "rpc.server.call.duration", "s", "duration of each gRPC call",
                lambda: [(t.attributes, t.buckets) for t in r.rpc.items()],
            ),
            _Family(
                "budgetd.journal.fsync.duration", "s", "journal fsync latency",
                lambda: [(r.fsync.attributes, r.fsync.buckets)],
            ),
            _Family(
                "budgetd.journal.fsync.records", "{record}", "records made durable per fsync",
                lambda: [(r.fsync_records.attributes, r.fsync_records.buckets)],
            ),
            _Family(
                "budgetd.snapshot.duration", "s", "time to write a snapshot",
                lambda: [(r.snapshots.attributes, r.snapshots.buckets)],
            ),
        )  # fmt: skip

    def metrics(self) -> list[Metric]:
        """Every histogram now, cumulative since start (whatever temporality the
        exporter prefers: a collector's cumulativetodelta processor converts). Empty
        series are left out."""
        now = time.time_ns()
        found = []
        for family in self.families:
            points = []
            for attributes, buckets in family.series():
                counts, total, low, high = buckets.read()
                count = sum(counts)
                if not count:
                    continue
                points.append(
                    HistogramDataPoint(
                        attributes=attributes,
                        start_time_unix_nano=self.started_ns,
                        time_unix_nano=now,
                        count=count,
                        sum=total,
                        bucket_counts=counts,
                        explicit_bounds=list(buckets.bounds),
                        min=low,
                        max=high,
                    )
                )
            if points:
                data = Histogram(points, AggregationTemporality.CUMULATIVE)
                found.append(Metric(family.name, family.description, family.unit, data))
        return found
