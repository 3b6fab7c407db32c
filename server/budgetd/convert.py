"""Translation between the wire messages of `budgetd.v1` and the core's plain objects.

Pure functions, no I/O. Requests become core arguments (the core validates their
values); results and events become responses. Where the wire can carry something the
core's types cannot (an enum number no one defined, a negative duration), the check is
here and raises the core's `InvalidArgument`, so every rule reaches the caller the same
way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from budgetd.core import (
    Blocker,
    Dimension,
    Enforcement,
    InvalidArgument,
    LedgerState,
    Policy,
    Severity,
    Totals,
    Usage,
)
from budgetd.core import events as ev
from budgetd.core.dimensions import DIMENSION_NAMES
from budgetd.core.ledger import parse_key
from budgetd.core.limits import Limits
from budgetd.core.policy import CalendarUnit, OnUnavailable, Scope, WindowKind
from budgetd.core.prices import PriceEntry, PriceMatch
from budgetd.core.results import (
    CheckResult,
    CommitResult,
    ConsumeResult,
    Decision,
    DimensionStatus,
    LedgerBrief,
    LedgerStatus,
    OpenRunResult,
    ReserveResult,
    ShareView,
)
from budgetd.v1 import budget_pb2 as pb

# --- enums -------------------------------------------------------------------------
# Core enums and wire enums differ in numbering (the wire reserves 0 for UNSPECIFIED).

DECISION = {
    Decision.ALLOW: pb.DECISION_ALLOW,
    Decision.ALLOW_WITH_WARNING: pb.DECISION_ALLOW_WITH_WARNING,
    Decision.DENY: pb.DECISION_DENY,
}
# Matched by name: the wire reserves 0 for UNSPECIFIED, so the numbers differ.
STATE = {
    state: cast(pb.LedgerState, pb.LedgerState.Value(f"LEDGER_STATE_{state.name}"))
    for state in LedgerState
}
STATE_FROM_WIRE: dict[int, LedgerState] = {wire: state for state, wire in STATE.items()}
DIMENSION = {d: cast(pb.Dimension, pb.Dimension.Value(f"DIMENSION_{d.name}")) for d in Dimension}
DIMENSION_FROM_WIRE: dict[int, Dimension] = {wire: d for d, wire in DIMENSION.items()}
UNPRICED_FROM_WIRE: dict[int, str] = {pb.UNPRICED_DENY: "deny", pb.UNPRICED_ALLOW: "allow"}
SCOPE = {Scope.LOCAL: pb.SCOPE_LOCAL, Scope.GLOBAL: pb.SCOPE_GLOBAL}
SCOPE_FROM_WIRE: dict[int, Scope] = {wire: scope for scope, wire in SCOPE.items()}
ON_UNAVAILABLE = {
    OnUnavailable.DENY: pb.ON_UNAVAILABLE_DENY,
    OnUnavailable.ALLOW_LOCAL: pb.ON_UNAVAILABLE_ALLOW_LOCAL,
}
ON_UNAVAILABLE_FROM_WIRE: dict[int, OnUnavailable] = {
    wire: mode for mode, wire in ON_UNAVAILABLE.items()
}
SEVERITY = {s: cast(pb.Severity, pb.Severity.Value(f"SEVERITY_{s.name}")) for s in Severity}
SEVERITY_FROM_WIRE: dict[int, Severity] = {wire: s for s, wire in SEVERITY.items()}
ENFORCEMENT = {
    Enforcement.HARD: pb.ENFORCEMENT_HARD,
    Enforcement.SOFT: pb.ENFORCEMENT_SOFT,
    Enforcement.SHADOW: pb.ENFORCEMENT_SHADOW,
}
ENFORCEMENT_FROM_WIRE: dict[int, Enforcement] = {wire: e for e, wire in ENFORCEMENT.items()}
CALENDAR_UNIT = {
    CalendarUnit.MINUTE: pb.CALENDAR_UNIT_MINUTE,
    CalendarUnit.HOUR: pb.CALENDAR_UNIT_HOUR,
    CalendarUnit.DAY: pb.CALENDAR_UNIT_DAY,
    CalendarUnit.WEEK: pb.CALENDAR_UNIT_WEEK,
    CalendarUnit.MONTH: pb.CALENDAR_UNIT_MONTH,
}
CALENDAR_UNIT_FROM_WIRE: dict[int, CalendarUnit] = {
    wire: unit for unit, wire in CALENDAR_UNIT.items()
}
RUN_END = {
    ev.RunEndReason.CLOSED: pb.RUN_END_REASON_CLOSED,
    ev.RunEndReason.HEARTBEAT_TIMEOUT: pb.RUN_END_REASON_HEARTBEAT_TIMEOUT,
    ev.RunEndReason.DURATION_EXCEEDED: pb.RUN_END_REASON_DURATION_EXCEEDED,
}
LEDGER_CLOSED = {
    ev.LedgerClosedReason.RESET: pb.LEDGER_CLOSED_REASON_RESET,
    ev.LedgerClosedReason.EVICTED: pb.LEDGER_CLOSED_REASON_EVICTED,
    ev.LedgerClosedReason.RUN_CLOSED: pb.LEDGER_CLOSED_REASON_RUN_CLOSED,
    ev.LedgerClosedReason.POLICY_DELETED: pb.LEDGER_CLOSED_REASON_POLICY_DELETED,
    ev.LedgerClosedReason.POLICY_CHANGED: pb.LEDGER_CLOSED_REASON_POLICY_CHANGED,
}
EVENT_KIND: dict[type[Any], int] = {
    ev.UsageRecorded: pb.EVENT_KIND_USAGE_RECORDED,
    ev.ThresholdCrossed: pb.EVENT_KIND_THRESHOLD_CROSSED,
    ev.Denied: pb.EVENT_KIND_DENIED,
    ev.LedgerExhausted: pb.EVENT_KIND_LEDGER_EXHAUSTED,
    ev.ReservationExpired: pb.EVENT_KIND_RESERVATION_EXPIRED,
    ev.RunOpened: pb.EVENT_KIND_RUN_OPENED,
    ev.RunEnded: pb.EVENT_KIND_RUN_ENDED,
    ev.WindowRolledOver: pb.EVENT_KIND_WINDOW_ROLLED_OVER,
    ev.LedgerClosed: pb.EVENT_KIND_LEDGER_CLOSED,
    ev.PolicyChanged: pb.EVENT_KIND_POLICY_CHANGED,
}
EVENT_KINDS = frozenset(EVENT_KIND.values()) | {pb.EVENT_KIND_GAP}

# Counters are Python ints and usage is always recorded, so a ledger's totals can pass
# what an int64 field holds; the wire then says "at least this much" instead of failing.
INT64_MAX = 2**63 - 1


def i64(value: int) -> int:
    return value if value <= INT64_MAX else INT64_MAX


# --- time ----------------------------------------------------------------------------


# The range of google.protobuf.Timestamp: 0001-01-01 .. 9999-12-31T23:59:59 UTC.
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799


def timestamp(seconds: float) -> Timestamp:
    """An instant on the wire, clamped to the Timestamp range (never an error: a far
    deadline or window end is reported as the latest instant the wire can carry)."""
    if not MIN_TIMESTAMP_S <= seconds <= MAX_TIMESTAMP_S:  # NaN too
        seconds = MIN_TIMESTAMP_S if seconds < MIN_TIMESTAMP_S else MAX_TIMESTAMP_S
    whole = int(seconds // 1)
    return Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def duration(seconds: float) -> Duration:
    whole = int(seconds // 1)
    return Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def ttl_seconds(message: Any, field: str, default_s: float) -> float:
    """A request's optional `ttl`: unset is the default; set, it must be positive (the
    core checks the upper bound)."""
    if not message.HasField(field):
        return default_s
    span: Duration = getattr(message, field)
    seconds = span.seconds + span.nanos / 1e9
    if seconds <= 0:
        raise InvalidArgument(field, f"must be a positive duration, got {seconds:g} s")
    return seconds


# --- requests ------------------------------------------------------------------------


MAX_LATENCY_MS = Limits().max_latency_ms  # the default bound, in whole milliseconds


def labels(wire_labels: Mapping[str, str]) -> dict[str, str]:
    """A request's label map as a dict. (`dict(map)` on a protobuf map goes through the
    Mapping protocol in Python: three times the cost, on every labeled call.)"""
    return {key: wire_labels[key] for key in wire_labels}


def usage(message: pb.Usage, field: str = "usage") -> Usage:
    if not message.latency_us and not 0 <= message.latency_ms <= MAX_LATENCY_MS:
        # Named here: the core knows the latency in microseconds only.
        raise InvalidArgument(f"{field}.latency_ms", f"must be in 0..{MAX_LATENCY_MS}")
    return Usage(
        message.input_tokens,
        message.output_tokens,
        message.cached_input_tokens,
        message.cost_micro_usd if message.HasField("cost_micro_usd") else None,
        message.model,
        message.provider,
        # Whole milliseconds count only without microseconds (older clients send them).
        message.latency_us or message.latency_ms * 1000,
        message.cache_write_input_tokens,
        message.reasoning_tokens,
    )


def enum_value(table: Mapping[int, Any], value: int, field: str) -> Any:
    found = table.get(value)
    if found is None:
        raise InvalidArgument(field, f"unknown value {value}")
    return found


def policy(message: pb.Policy, where: str = "policy") -> dict[str, Any]:
    """A wire policy as the mapping `Policy.from_mapping` parses (one parser for every
    source, so the rules and messages are the same as for the config file)."""
    data: dict[str, Any] = {
        "name": message.name,
        "description": message.description,
        "match": dict(message.match),
        "per": list(message.per),
        "caps": {},
        "evictable": message.evictable,
        "close_with_run": message.close_with_run,
        "missing": dict(message.missing),
        "export_ledgers": message.export_ledgers,
    }
    if message.unpriced != pb.UNPRICED_UNSPECIFIED:
        unpriced = enum_value(UNPRICED_FROM_WIRE, message.unpriced, f"{where}.unpriced")
        data["unpriced"] = unpriced
    if message.scope != pb.SCOPE_UNSPECIFIED:
        data["scope"] = enum_value(SCOPE_FROM_WIRE, message.scope, f"{where}.scope").value
    if message.on_unavailable != pb.ON_UNAVAILABLE_UNSPECIFIED:
        mode = enum_value(
            ON_UNAVAILABLE_FROM_WIRE, message.on_unavailable, f"{where}.on_unavailable"
        )
        data["on_unavailable"] = mode.value
    if message.HasField("idle_ttl"):
        span = message.idle_ttl
        if span.nanos or span.seconds <= 0:
            raise InvalidArgument(f"{where}.idle_ttl", "must be a positive whole number of seconds")
        data["idle_ttl_s"] = span.seconds
    for i, cap in enumerate(message.caps):
        dimension = enum_value(DIMENSION_FROM_WIRE, cap.dimension, f"{where}.caps[{i}].dimension")
        name = DIMENSION_NAMES[dimension]
        if name in data["caps"]:
            raise InvalidArgument(f"{where}.caps[{i}]", f"{name} is capped twice")
        data["caps"][name] = cap.limit
    if message.HasField("window"):
        data["window"] = _window(message.window, f"{where}.window")
    if message.enforcement != pb.ENFORCEMENT_UNSPECIFIED:
        enforcement = enum_value(ENFORCEMENT_FROM_WIRE, message.enforcement, f"{where}.enforcement")
        data["enforcement"] = enforcement.value
    if message.thresholds:
        data["thresholds"] = [
            {
                "percent": t.percent,
                "severity": enum_value(
                    SEVERITY_FROM_WIRE, t.severity, f"{where}.thresholds[{i}].severity"
                ).name.lower(),
            }
            for i, t in enumerate(message.thresholds)
        ]
    return data


def _window(message: pb.Window, where: str) -> dict[str, Any]:
    kind = message.WhichOneof("kind")
    if kind is None or kind == "lifetime":
        return {"kind": "lifetime"}
    if kind == "calendar":
        unit = enum_value(CALENDAR_UNIT_FROM_WIRE, message.calendar.unit, f"{where}.calendar.unit")
        return {
            "kind": "calendar",
            "unit": unit.value,
            "time_zone": message.calendar.time_zone or "UTC",
        }
    span = message.fixed.duration if kind == "fixed" else message.sliding.duration
    if span.nanos:
        raise InvalidArgument(f"{where}.{kind}.duration", "must be whole seconds")
    return {"kind": kind, "duration_s": span.seconds}


def caps(messages: Sequence[pb.Cap], where: str = "caps") -> list[tuple[Dimension, int]]:
    found: dict[Dimension, int] = {}
    for i, cap in enumerate(messages):
        dimension = enum_value(DIMENSION_FROM_WIRE, cap.dimension, f"{where}[{i}].dimension")
        if dimension in found:
            raise InvalidArgument(f"{where}[{i}]", f"{DIMENSION_NAMES[dimension]} is capped twice")
        found[dimension] = cap.limit
    return list(found.items())


# --- results -------------------------------------------------------------------------


def briefs(ledgers: Sequence[LedgerBrief]) -> list[pb.LedgerBrief]:
    return [pb.LedgerBrief(key=key, state=STATE[state]) for key, state in ledgers]


def totals(value: Totals) -> pb.Totals:
    message = pb.Totals(
        total_tokens=i64(value.total_tokens),
        input_tokens=i64(value.input_tokens),
        output_tokens=i64(value.output_tokens),
        cached_input_tokens=i64(value.cached_input_tokens),
        cost_micro_usd=i64(value.cost_micro_usd),
        requests=i64(value.requests),
        unpriced_requests=i64(value.unpriced_requests),
        run_duration_ms=i64(value.run_duration_ms),
        latency_ms_sum=i64(value.latency_us_sum // 1000),
        latency_samples=i64(value.latency_samples),
        cache_write_input_tokens=i64(value.cache_write_input_tokens),
        reasoning_tokens=i64(value.reasoning_tokens),
        latency_us_sum=i64(value.latency_us_sum),
        unpriced_tokens=i64(value.unpriced_tokens),
    )
    if value.first_use is not None:
        message.first_use.CopyFrom(timestamp(value.first_use))
    if value.last_use is not None:
        message.last_use.CopyFrom(timestamp(value.last_use))
    return message


def _dimension_status(d: DimensionStatus) -> pb.DimensionStatus:
    message = pb.DimensionStatus(
        dimension=DIMENSION[d.dimension],
        used=i64(d.used),
        reserved=i64(d.reserved),
        limit=d.limit,
        remaining=d.remaining,
        percent=min(d.percent_used, 2**31 - 1),
    )
    if d.resets_at is not None:
        message.resets_at.CopyFrom(timestamp(d.resets_at))
    return message


def _dimensions(status: LedgerStatus) -> list[pb.DimensionStatus]:
    """Every capped dimension, in Dimension order. The core reports the per-run
    duration cap apart: it bounds each run, not the ledger. On the wire it is one more
    dimension whose `used` is the time of the runs that finished in this window, while
    `remaining` is what a new run can still get (the whole cap) and `percent` is 0."""
    dimensions = [_dimension_status(d) for d in status.dimensions]
    limit = status.run_duration_limit_ms
    if limit is not None:
        dimensions.append(
            pb.DimensionStatus(
                dimension=pb.DIMENSION_RUN_DURATION_MS,
                used=i64(status.totals.run_duration_ms),
                limit=limit,
                remaining=limit,
            )
        )
    return dimensions


def ledger_status(status: LedgerStatus) -> pb.LedgerStatus:
    message = pb.LedgerStatus(
        key=status.key,
        policy=status.policy,
        labels=dict(status.labels),
        state=STATE[status.state],
        dimensions=_dimensions(status),
        totals=totals(status.totals),
        window_start=timestamp(status.window_start),
        enforcement=ENFORCEMENT[status.enforcement],
        open_runs=status.open_runs,
        reservations=status.reservations,
    )
    if status.window_end is not None:
        message.window_end.CopyFrom(timestamp(status.window_end))
    if status.share is not None:
        message.share.CopyFrom(_share(status.share))
    return message


def _share(view: ShareView) -> pb.GlobalShare:
    message = pb.GlobalShare(
        dimensions=[
            pb.GlobalDimension(
                dimension=DIMENSION[Dimension(d)],
                global_used=i64(used),
                lease_remaining=i64(view.lease_remaining[d]),
                bound=i64(view.bound[d]),
                unsettled=i64(view.unsettled[d]),
            )
            for d, used in view.global_used.items()
        ],
        sidecars=view.sidecars,
        reachable=view.reachable,
    )
    if view.lease_until:
        message.lease_until.CopyFrom(timestamp(view.lease_until))
    if view.synced_at:
        message.synced_at.CopyFrom(timestamp(view.synced_at))
    return message


def blocker(b: Blocker) -> pb.Blocker:
    message = pb.Blocker(
        policy=b.policy,
        ledger=b.ledger,
        dimension=DIMENSION[b.dimension],
        used=i64(b.used),
        reserved=i64(b.reserved),
        requested=b.requested,
        limit=b.limit,
        shortfall=i64(b.shortfall),
        enforcement=ENFORCEMENT[b.enforcement],
        reason=(
            pb.BLOCK_REASON_UNPRICED
            if b.unpriced
            else pb.BLOCK_REASON_LEASE
            if b.lease
            else pb.BLOCK_REASON_OVER_CAP
        ),
        model=b.model,
    )
    if b.resets_at is not None:
        message.resets_at.CopyFrom(timestamp(b.resets_at))
    return message


def crossing(c: ev.ThresholdCrossed) -> pb.ThresholdCrossing:
    return pb.ThresholdCrossing(
        policy=c.policy,
        ledger=c.ledger,
        dimension=DIMENSION[c.dimension],
        percent=c.percent,
        severity=SEVERITY[c.severity],
        used=i64(c.used),
        limit=c.limit,
        percent_used=min(c.used * 100 // c.limit if c.limit else 100, 2**31 - 1),
        remaining=c.remaining,
    )


def check_response(result: CheckResult) -> pb.CheckResponse:
    cost = result.cost_micro_usd
    return pb.CheckResponse(
        decision=DECISION[result.decision],
        ledgers=[ledger_status(s) for s in result.ledgers],
        blockers=[blocker(b) for b in result.blockers],
        warnings=[blocker(b) for b in result.warnings],
        cost_known=cost is not None,
        estimated_cost_micro_usd=cost or 0,
    )


def reserve_response(result: ReserveResult) -> pb.ReserveResponse:
    granted = result.decision is not Decision.DENY
    cost = result.cost_micro_usd
    message = pb.ReserveResponse(
        decision=DECISION[result.decision],
        reservation_id=result.reservation_id,
        ledgers=briefs(result.ledgers),
        blockers=[blocker(b) for b in result.blockers],
        warnings=[blocker(b) for b in result.warnings],
        cost_known=cost is not None,
        reserved_cost_micro_usd=(cost or 0) if granted else 0,
        replayed=result.replayed,
    )
    if result.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(result.expires_at))
    return message


def commit_response(result: CommitResult) -> pb.CommitResponse:
    cost = result.cost_micro_usd
    return pb.CommitResponse(
        ledgers=briefs(result.ledgers),
        crossings=[crossing(c) for c in result.crossings],
        overruns=[
            pb.Overrun(dimension=DIMENSION[o.dimension], reserved=o.reserved, actual=o.actual)
            for o in result.overruns
        ],
        cost_known=cost is not None,
        cost_micro_usd=cost or 0,
        replayed=result.replayed,
    )


def consume_response(result: ConsumeResult) -> pb.ConsumeResponse:
    cost = result.cost_micro_usd
    return pb.ConsumeResponse(
        ledgers=briefs(result.ledgers),
        crossings=[crossing(c) for c in result.crossings] if result.crossings else None,
        cost_known=cost is not None,
        cost_micro_usd=cost or 0,
        replayed=result.replayed,
    )


def open_run_response(result: OpenRunResult) -> pb.OpenRunResponse:
    message = pb.OpenRunResponse(
        decision=DECISION[result.decision],
        blockers=[blocker(b) for b in result.blockers],
        warnings=[blocker(b) for b in result.warnings],
        ledgers=briefs(result.ledgers),
        replayed=result.replayed,
    )
    if result.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(result.expires_at))
    if result.deadline is not None:
        message.deadline.CopyFrom(timestamp(result.deadline))
    return message


def policy_message(value: Policy) -> pb.Policy:
    message = pb.Policy(
        name=value.name,
        description=value.description,
        match=dict(value.match),
        per=list(value.per),
        caps=[pb.Cap(dimension=DIMENSION[d], limit=limit) for d, limit in value.caps],
        enforcement=ENFORCEMENT[value.enforcement],
        thresholds=[
            pb.Threshold(percent=t.percent, severity=SEVERITY[t.severity]) for t in value.thresholds
        ],
        evictable=value.evictable,
        close_with_run=value.close_with_run,
        unpriced=pb.UNPRICED_ALLOW if value.unpriced_allowed else pb.UNPRICED_DENY,
        missing=dict(value.missing),
        export_ledgers=value.export_ledgers,
    )
    if value.is_global:
        message.scope = pb.SCOPE_GLOBAL
        message.on_unavailable = ON_UNAVAILABLE[value.on_unavailable]
    if value.idle_ttl_s:
        message.idle_ttl.seconds = value.idle_ttl_s
    window = value.window
    if window.kind is WindowKind.LIFETIME:
        message.window.lifetime.SetInParent()
    elif window.kind is WindowKind.CALENDAR:
        assert window.unit is not None
        message.window.calendar.unit = CALENDAR_UNIT[window.unit]
        message.window.calendar.time_zone = window.time_zone
    elif window.kind is WindowKind.FIXED:
        message.window.fixed.duration.seconds = window.duration_s
    else:
        message.window.sliding.duration.seconds = window.duration_s
    return message


# --- events --------------------------------------------------------------------------


def event_labels(event: ev.Event) -> Mapping[str, str]:
    """The labels a subscriber's selector sees: the request's, or the ledger's (from its
    key, so a closed ledger still has them)."""
    labels = getattr(event, "labels", None)
    if labels is not None:
        return labels  # type: ignore[no-any-return]
    key = getattr(event, "ledger", None)
    if key is None:
        return {}
    parsed = parse_key(key)
    return parsed[1] if parsed is not None else {}


def event_message(seq: int, event: ev.Event) -> pb.Event:
    message = pb.Event(seq=seq, at=timestamp(event.at), labels=dict(event_labels(event)))
    match event:
        case ev.UsageRecorded():
            cost = event.cost_micro_usd
            message.usage_recorded.CopyFrom(
                pb.Event.UsageRecorded(
                    request_id=event.request_id,
                    run_id=event.run_id,
                    usage=usage_message(event.usage),
                    cost_micro_usd=cost or 0,
                    cost_known=cost is not None,
                    ledger_keys=[key for key, _ in event.ledgers],
                )
            )
        case ev.ThresholdCrossed():
            message.threshold_crossed.crossing.CopyFrom(crossing(event))
        case ev.Denied():
            message.denied.blocker.CopyFrom(blocker(event.blocker))
            message.denied.request_id = event.request_id
            message.denied.run_id = event.run_id
        case ev.LedgerExhausted():
            message.ledger_exhausted.CopyFrom(
                pb.Event.LedgerExhausted(
                    policy=event.policy,
                    ledger=event.ledger,
                    dimension=DIMENSION[event.dimension],
                    used=i64(event.used),
                    limit=event.limit,
                )
            )
        case ev.ReservationExpired():
            message.reservation_expired.reservation_id = event.reservation_id
            message.reservation_expired.estimate.CopyFrom(usage_message(event.estimate))
        case ev.RunOpened():
            message.run_opened.run_id = event.run_id
        case ev.RunEnded():
            message.run_ended.CopyFrom(
                pb.Event.RunEnded(
                    run_id=event.run_id,
                    reason=RUN_END[event.reason],
                    totals=totals(event.totals),
                    duration=duration(event.duration_s),
                )
            )
        case ev.WindowRolledOver():
            message.window_rolled_over.CopyFrom(
                pb.Event.WindowRolledOver(
                    policy=event.policy,
                    ledger=event.ledger,
                    window_start=timestamp(event.window_start),
                    window_end=timestamp(event.window_end),
                    totals=totals(event.totals),
                )
            )
        case ev.LedgerClosed():
            message.ledger_closed.CopyFrom(
                pb.Event.LedgerClosed(
                    policy=event.policy,
                    ledger=event.ledger,
                    reason=LEDGER_CLOSED[event.reason],
                    totals=totals(event.totals),
                )
            )
        case ev.PolicyChanged():
            message.policy_changed.name = event.name
            message.policy_changed.deleted = event.deleted
    return message


def gap_message(seq: int, at: float, oldest_available_seq: int) -> pb.Event:
    message = pb.Event(seq=seq, at=timestamp(at))
    message.gap.oldest_available_seq = oldest_available_seq
    return message


def usage_message(value: Usage) -> pb.Usage:
    message = pb.Usage(
        input_tokens=value.input_tokens,
        output_tokens=value.output_tokens,
        cached_input_tokens=value.cached_input_tokens,
        model=value.model,
        provider=value.provider,
        latency_ms=value.latency_us // 1000,
        latency_us=value.latency_us,
        cache_write_input_tokens=value.cache_write_input_tokens,
        reasoning_tokens=value.reasoning_tokens,
    )
    if value.cost_micro_usd is not None:
        message.cost_micro_usd = value.cost_micro_usd
    return message


# --- prices --------------------------------------------------------------------------


def model_price(entry: PriceEntry) -> pb.ModelPrice:
    price = entry.price
    return pb.ModelPrice(
        model=entry.name,
        input_micro_usd=price.input,
        output_micro_usd=price.output,
        cached_input_micro_usd=price.cached_input,
        cache_write_input_micro_usd=price.cache_write_input,
        reasoning_micro_usd=price.reasoning,
        source=entry.source,
    )


def price_match(match: PriceMatch) -> pb.GetPriceResponse:
    message = pb.GetPriceResponse(normalized=match.normalized, reason=match.reason)
    if match.entry is not None:
        message.price.CopyFrom(model_price(match.entry))
    return message
