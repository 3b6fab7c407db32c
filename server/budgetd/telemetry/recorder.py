"""The hot path's side of telemetry: what each mutation, check and call adds to the series.

`Runtime` hands every mutation that counted (its op, result and events) to `applied`,
and every Check to `checked`; the RPC wrapper (`rpc`) hands each call's duration to a
`Timing`; the journal's writer thread hands each fsync to `fsynced`. Each of these adds
integers to series found by a tuple key (`budgetd.telemetry.series`): no attribute dict
is built per call, and no OpenTelemetry call is made on the hot path.

Which labels name a series is the allowlist (`TelemetrySettings.attributes`); thread,
run, reservation and request ids never do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from budgetd.core import events as ev
from budgetd.core.dimensions import DIMENSION_NAMES
from budgetd.core.results import Decision
from budgetd.telemetry.exported_ledgers import ExportedLedgers
from budgetd.telemetry.series import (
    RECORDS_BOUNDS,
    TOKEN_BOUNDS,
    Attributes,
    Buckets,
    Count,
    SeriesMap,
    Timing,
)
from budgetd.telemetry.settings import TelemetrySettings

RPC_SERIES = 64 * 17  # every method this server could register, times the 17 status codes
TOKEN_PARTS = ("cached_input", "cache_write_input", "reasoning")  # UsageSeries' fields
DECISIONS = {Decision.ALLOW: "allow", Decision.ALLOW_WITH_WARNING: "warn", Decision.DENY: "deny"}


class UsageSeries:
    """Everything one (model, provider, operation, labels) attribute set records."""

    __slots__ = (
        "attributes",
        "cache_write_input",
        "cached_input",
        "cost_micro_usd",
        "input",
        "input_attributes",
        "input_buckets",
        "output",
        "output_attributes",
        "output_buckets",
        "part_attributes",
        "reasoning",
        "records",
        "unpriced",
    )

    def __init__(self, attributes: Attributes) -> None:
        self.attributes = attributes
        self.input_attributes: Attributes = {"gen_ai.token.type": "input", **attributes}
        self.output_attributes: Attributes = {"gen_ai.token.type": "output", **attributes}
        self.part_attributes: dict[str, Attributes] = {
            part: {"budgetd.token.part": part, **attributes} for part in TOKEN_PARTS
        }
        self.input = self.output = 0
        self.cached_input = self.cache_write_input = self.reasoning = 0
        self.cost_micro_usd = self.records = self.unpriced = 0
        self.input_buckets = Buckets(TOKEN_BOUNDS)
        self.output_buckets = Buckets(TOKEN_BOUNDS)


class Recorder:
    """Every series the daemon exports, and the code that adds to them."""

    def __init__(self, settings: TelemetrySettings) -> None:
        cap = settings.max_series
        allowed = set(settings.attributes)
        self.labels = settings.label_attributes
        self.with_model = "model" in allowed
        self.with_provider = "provider" in allowed
        self.with_policy = "policy" in allowed
        # The `operation` label names gen_ai.operation.name when allowed; else "chat".
        self.with_operation = "operation" in allowed
        self.usage: SeriesMap[UsageSeries] = SeriesMap("budgetd.tokens", cap, UsageSeries)
        self.decisions: SeriesMap[Count] = SeriesMap("budgetd.decisions", cap, Count)
        self.crossings: SeriesMap[Count] = SeriesMap("budgetd.thresholds.crossed", cap, Count)
        self.closed: SeriesMap[Count] = SeriesMap("budgetd.ledgers.closed", cap, Count)
        self.overruns: SeriesMap[Count] = SeriesMap("budgetd.overruns", cap, Count)
        self.runs_ended: SeriesMap[Count] = SeriesMap("budgetd.runs.ended", cap, Count)
        # Methods x status codes: bounded by the contract, not by callers (max_series is
        # for label values), so a cap of its own.
        self.rpc: SeriesMap[Timing] = SeriesMap("rpc.server.call.duration", RPC_SERIES, Timing)
        self.reservations = {o: 0 for o in ("granted", "committed", "released", "expired")}
        self.runs_opened = 0
        self.fsync = Timing({})
        self.fsync_records = Timing({}, RECORDS_BOUNDS)
        self.snapshots = Timing({})
        self.ledgers = ExportedLedgers(settings.max_ledger_series, self.ledger_attributes)
        self._by_op: dict[str, Callable[[Mapping[str, Any], Any], None]] = {
            "reserve": self._reserved,
            "commit": self._committed,
            "release": self._released,
            "open_run": self._run_opened,
            "consume": self._briefs,
        }
        self._by_event: dict[type, Callable[[Any], None]] = {
            ev.UsageRecorded: self._usage,
            ev.ThresholdCrossed: self._crossed,
            ev.ReservationExpired: self._expired,
            ev.RunEnded: self._run_ended,
            ev.LedgerClosed: self._ledger_closed,
        }

    # --- entry points ---------------------------------------------------------------

    def applied(
        self, op: str, args: Mapping[str, Any], result: Any, events: list[ev.Event]
    ) -> None:
        """A mutation that counted: its arguments, result and events (a replayed answer
        changed nothing and adds nothing)."""
        if getattr(result, "replayed", False):
            return
        by_op = self._by_op.get(op)
        if by_op is not None:
            by_op(args, result)
        by_event = self._by_event
        for event in events:
            handle = by_event.get(type(event))
            if handle is not None:
                handle(event)

    def checked(self, result: Any, labels: Mapping[str, str]) -> None:
        self._decided("check", result, labels)

    def fsynced(self, seconds: float, records: int) -> None:
        """The journal's writer thread: one fsync and how many records it made durable."""
        self.fsync.buckets.record(seconds)
        self.fsync_records.buckets.record(records)

    def snapshot_written(self, seconds: float) -> None:
        self.snapshots.buckets.record(seconds)

    def rpc_series(self, method: str, code: str) -> Timing:
        return self.rpc.get(
            (method, code),
            lambda: {
                "rpc.system.name": "grpc",
                "rpc.method": method,
                "rpc.response.status_code": code,
            },
        )

    # --- attribute sets ----------------------------------------------------------------

    def label_attributes(self, labels: Mapping[str, str]) -> Attributes:
        return {k: labels[k] for k in self.labels if k in labels}

    def ledger_attributes(self, labels: Mapping[str, str]) -> Attributes:
        """A ledger's labels as attributes: the allowed ones, model and provider under
        their GenAI names (a per-model ledger is told apart by its model)."""
        made = self.label_attributes(labels)
        if self.with_model and "model" in labels:
            made["gen_ai.request.model"] = labels["model"]
        if self.with_provider and "provider" in labels:
            made["gen_ai.provider.name"] = labels["provider"]
        return made

    # --- per op and per event -------------------------------------------------------

    def _usage(self, event: ev.UsageRecorded) -> None:
        usage, labels = event.usage, event.labels
        model = usage.model if self.with_model else ""
        provider = usage.provider if self.with_provider else ""
        operation = (labels.get("operation") if self.with_operation else None) or "chat"
        key = (model, provider, operation, *map(labels.get, self.labels))
        series = self.usage.find(key)
        if series is None:
            series = self.usage.add(
                key, lambda: self._usage_attributes(model, provider, operation, labels)
            )
        series.input += usage.input_tokens
        series.output += usage.output_tokens
        series.cached_input += usage.cached_input_tokens
        series.cache_write_input += usage.cache_write_input_tokens
        series.reasoning += usage.reasoning_tokens
        series.records += 1
        series.input_buckets.record(usage.input_tokens)
        series.output_buckets.record(usage.output_tokens)
        cost = event.cost_micro_usd
        if cost is None:
            series.unpriced += 1
        else:
            series.cost_micro_usd += cost

    def _usage_attributes(
        self, model: str, provider: str, operation: str, labels: Mapping[str, str]
    ) -> Attributes:
        attributes: Attributes = {"gen_ai.operation.name": operation}
        if model:
            attributes["gen_ai.request.model"] = model
        if provider:
            attributes["gen_ai.provider.name"] = provider
        return attributes | self.label_attributes(labels)

    def _decided(self, operation: str, result: Any, labels: Mapping[str, str]) -> None:
        decision = result.decision
        first = result.blockers or result.warnings
        blocker = first[0] if first else None
        policy = blocker.policy if blocker is not None and self.with_policy else ""
        dimension = DIMENSION_NAMES[blocker.dimension] if blocker is not None else ""
        key = (operation, decision, policy, dimension, *map(labels.get, self.labels))
        series = self.decisions.find(key)
        if series is None:
            series = self.decisions.add(
                key,
                lambda: self._decision_attributes(operation, decision, policy, dimension, labels),
            )
        series.value += 1
        if self.ledgers.policies:
            self.ledgers.seen(result.ledgers)

    def _decision_attributes(
        self,
        operation: str,
        decision: Decision,
        policy: str,
        dimension: str,
        labels: Mapping[str, str],
    ) -> Attributes:
        made: Attributes = {"budgetd.operation": operation, "budgetd.decision": DECISIONS[decision]}
        if policy:
            made["budgetd.policy"] = policy
        if dimension:
            made["budgetd.dimension"] = dimension
        return made | self.label_attributes(labels)

    def _reserved(self, args: Mapping[str, Any], result: Any) -> None:
        self._decided("reserve", result, args["labels"])
        if result.decision is not Decision.DENY:
            self.reservations["granted"] += 1

    def _committed(self, args: Mapping[str, Any], result: Any) -> None:
        if not result.late:  # a late commit's hold already counted as expired
            self.reservations["committed"] += 1
        for overrun in result.overruns:
            name = DIMENSION_NAMES[overrun.dimension]
            self.overruns.get(name, functools.partial(_one, "budgetd.dimension", name)).value += 1
        if self.ledgers.policies:
            self.ledgers.seen(result.ledgers)

    def _released(self, args: Mapping[str, Any], result: Any) -> None:
        if result.released:
            self.reservations["released"] += 1

    def _run_opened(self, args: Mapping[str, Any], result: Any) -> None:
        self._decided("open_run", result, args["labels"])
        if result.decision is not Decision.DENY:
            self.runs_opened += 1

    def _briefs(self, args: Mapping[str, Any], result: Any) -> None:
        if self.ledgers.policies:
            self.ledgers.seen(result.ledgers)

    def _crossed(self, event: ev.ThresholdCrossed) -> None:
        policy = event.policy if self.with_policy else ""
        dimension = DIMENSION_NAMES[event.dimension]
        severity = event.severity.name.lower()
        labels = event.labels
        key = (policy, dimension, severity, *map(labels.get, self.labels))

        def attributes() -> Attributes:
            made: Attributes = {"budgetd.dimension": dimension, "budgetd.severity": severity}
            if policy:
                made["budgetd.policy"] = policy
            return made | self.label_attributes(labels)

        self.crossings.get(key, attributes).value += 1

    def _expired(self, event: ev.ReservationExpired) -> None:
        self.reservations["expired"] += 1

    def _run_ended(self, event: ev.RunEnded) -> None:
        reason = event.reason.value
        self.runs_ended.get(reason, functools.partial(_one, "budgetd.reason", reason)).value += 1

    def _ledger_closed(self, event: ev.LedgerClosed) -> None:
        policy = event.policy if self.with_policy else ""
        reason = event.reason.value

        def attributes() -> Attributes:
            made: Attributes = {"budgetd.reason": reason}
            if policy:
                made["budgetd.policy"] = policy
            return made

        self.closed.get((policy, reason), attributes).value += 1
        self.ledgers.closed(event.ledger)


def _one(name: str, value: str) -> Attributes:
    return {name: value}
