"""Translation between protobuf messages and the SDK's dataclasses (no I/O).

Optional wire fields (unset timestamps, an unset cost) become None rather than zero, so
"unknown" and "zero" stay distinct.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from budgetd_client.enums import (
    Decision,
    Dimension,
    Enforcement,
    LedgerState,
    Severity,
    from_wire,
)
from budgetd_client.errors import BudgetExhausted
from budgetd_client.models import (
    Blocker,
    CheckResult,
    CommitResult,
    ConsumeResult,
    Crossing,
    DimensionStatus,
    HeartbeatResult,
    LedgerBrief,
    LedgerStatus,
    Overrun,
    ReserveResult,
    Run,
    RunTotals,
    Totals,
    Usage,
)
from budgetd_client.v1 import budget_pb2 as pb

# --- time ----------------------------------------------------------------------------


def instant(value: Timestamp) -> datetime:
    return datetime.fromtimestamp(value.seconds + value.nanos / 1e9, tz=UTC)


def optional_instant(message: Message, field: str) -> datetime | None:
    """The timestamp `field` of `message`, or None when it is unset."""
    return instant(getattr(message, field)) if message.HasField(field) else None


def seconds(value: Duration) -> float:
    return value.seconds + value.nanos / 1e9


def duration(value_s: float) -> Duration:
    whole = int(value_s // 1)
    return Duration(seconds=whole, nanos=int((value_s - whole) * 1e9))


# --- values --------------------------------------------------------------------------


def usage_message(value: Usage) -> pb.Usage:
    message = pb.Usage(
        input_tokens=value.input_tokens,
        output_tokens=value.output_tokens,
        cached_input_tokens=value.cached_input_tokens,
        model=value.model,
        provider=value.provider,
        latency_ms=value.latency_us // 1000 if value.latency_us else value.latency_ms,
        latency_us=value.latency_us,
        cache_write_input_tokens=value.cache_write_input_tokens,
        reasoning_tokens=value.reasoning_tokens,
    )
    if value.cost_micro_usd is not None:
        message.cost_micro_usd = value.cost_micro_usd
    return message


def usage(message: pb.Usage) -> Usage:
    return Usage(
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        cached_input_tokens=message.cached_input_tokens,
        cost_micro_usd=message.cost_micro_usd if message.HasField("cost_micro_usd") else None,
        model=message.model,
        provider=message.provider,
        latency_ms=message.latency_ms,
        cache_write_input_tokens=message.cache_write_input_tokens,
        reasoning_tokens=message.reasoning_tokens,
        latency_us=message.latency_us,
    )


def totals(message: pb.Totals) -> Totals:
    return Totals(
        total_tokens=message.total_tokens,
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        cached_input_tokens=message.cached_input_tokens,
        cost_micro_usd=message.cost_micro_usd,
        requests=message.requests,
        unpriced_requests=message.unpriced_requests,
        run_duration_ms=message.run_duration_ms,
        latency_ms_sum=message.latency_ms_sum,
        latency_samples=message.latency_samples,
        first_use=optional_instant(message, "first_use"),
        last_use=optional_instant(message, "last_use"),
        cache_write_input_tokens=message.cache_write_input_tokens,
        reasoning_tokens=message.reasoning_tokens,
        latency_us_sum=message.latency_us_sum,
        unpriced_tokens=message.unpriced_tokens,
    )


def brief(message: pb.LedgerBrief) -> LedgerBrief:
    return LedgerBrief(message.key, from_wire(LedgerState, message.state))


def briefs(messages: Iterable[pb.LedgerBrief]) -> tuple[LedgerBrief, ...]:
    return tuple(brief(m) for m in messages)


def dimension_status(message: pb.DimensionStatus) -> DimensionStatus:
    return DimensionStatus(
        dimension=from_wire(Dimension, message.dimension),
        used=message.used,
        reserved=message.reserved,
        limit=message.limit,
        remaining=message.remaining,
        percent=message.percent,
        resets_at=optional_instant(message, "resets_at"),
    )


def ledger_status(message: pb.LedgerStatus) -> LedgerStatus:
    return LedgerStatus(
        key=message.key,
        policy=message.policy,
        labels=dict(message.labels),
        state=from_wire(LedgerState, message.state),
        dimensions=tuple(dimension_status(d) for d in message.dimensions),
        totals=totals(message.totals),
        window_start=instant(message.window_start),
        window_end=optional_instant(message, "window_end"),
        enforcement=from_wire(Enforcement, message.enforcement),
        open_runs=message.open_runs,
        reservations=message.reservations,
    )


def blocker(message: pb.Blocker) -> Blocker:
    return Blocker(
        policy=message.policy,
        ledger=message.ledger,
        dimension=from_wire(Dimension, message.dimension),
        used=message.used,
        reserved=message.reserved,
        requested=message.requested,
        limit=message.limit,
        shortfall=message.shortfall,
        enforcement=from_wire(Enforcement, message.enforcement),
        resets_at=optional_instant(message, "resets_at"),
        unpriced=message.reason == pb.BLOCK_REASON_UNPRICED,
        model=message.model,
    )


def crossing(message: pb.ThresholdCrossing) -> Crossing:
    return Crossing(
        policy=message.policy,
        ledger=message.ledger,
        dimension=from_wire(Dimension, message.dimension),
        percent=message.percent,
        severity=from_wire(Severity, message.severity),
        used=message.used,
        limit=message.limit,
        percent_used=message.percent_used,
        remaining=message.remaining,
    )


# --- answers -------------------------------------------------------------------------


def granted(decision: int, blockers: Iterable[pb.Blocker]) -> Decision:
    """The decision of a Reserve or OpenRun, raising `BudgetExhausted` on DENY."""
    value = from_wire(Decision, decision)
    if value is Decision.deny:
        raise BudgetExhausted([blocker(b) for b in blockers])
    return value


def check_result(message: pb.CheckResponse) -> CheckResult:
    return CheckResult(
        decision=from_wire(Decision, message.decision),
        ledgers=tuple(ledger_status(s) for s in message.ledgers),
        blockers=tuple(blocker(b) for b in message.blockers),
        warnings=tuple(blocker(b) for b in message.warnings),
        cost_known=message.cost_known,
        estimated_cost_micro_usd=message.estimated_cost_micro_usd,
    )


def reserve_result(message: pb.ReserveResponse) -> ReserveResult:
    return ReserveResult(
        reservation_id=message.reservation_id,
        decision=granted(message.decision, message.blockers),
        expires_at=optional_instant(message, "expires_at"),
        ledgers=briefs(message.ledgers),
        warnings=tuple(blocker(b) for b in message.warnings),
        cost_known=message.cost_known,
        reserved_cost_micro_usd=message.reserved_cost_micro_usd,
        replayed=message.replayed,
    )


def commit_result(message: pb.CommitResponse) -> CommitResult:
    return CommitResult(
        ledgers=briefs(message.ledgers),
        crossings=tuple(crossing(c) for c in message.crossings),
        overruns=tuple(
            Overrun(from_wire(Dimension, o.dimension), o.reserved, o.actual)
            for o in message.overruns
        ),
        cost_known=message.cost_known,
        cost_micro_usd=message.cost_micro_usd,
        replayed=message.replayed,
    )


def consume_result(message: pb.ConsumeResponse) -> ConsumeResult:
    return ConsumeResult(
        ledgers=briefs(message.ledgers),
        crossings=tuple(crossing(c) for c in message.crossings),
        cost_known=message.cost_known,
        cost_micro_usd=message.cost_micro_usd,
        replayed=message.replayed,
    )


def run(run_id: str, message: pb.OpenRunResponse) -> Run:
    return Run(
        run_id=run_id,
        decision=granted(message.decision, message.blockers),
        expires_at=optional_instant(message, "expires_at"),
        deadline=optional_instant(message, "deadline"),
        ledgers=briefs(message.ledgers),
        warnings=tuple(blocker(b) for b in message.warnings),
        replayed=message.replayed,
    )


def heartbeat_result(message: pb.HeartbeatResponse) -> HeartbeatResult:
    return HeartbeatResult(instant(message.expires_at), optional_instant(message, "deadline"))


def run_totals(run_id: str, message: pb.CloseRunResponse) -> RunTotals:
    return RunTotals(
        run_id=run_id,
        totals=totals(message.totals),
        duration_s=seconds(message.duration),
        closed_ledgers=tuple(ledger_status(s) for s in message.closed_ledgers),
        replayed=message.replayed,
    )
