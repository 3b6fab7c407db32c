"""One line of text per event of the stream, for `budgetctl watch`.

A line reads `seq time kind {labels} what-happened`, so `grep`, `awk` and eyes can
follow a live stream; the style only colours it on a terminal (severity of a
threshold, HARD denials and exhaustion in red).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from budgetd_client.ctl import formats as fmt
from budgetd_client.v1 import budget_pb2 as pb

KIND_NAMES = [
    fmt.enum_name(pb.EventKind, value, "EVENT_KIND_")
    for value in pb.EventKind.values()
    if value not in (pb.EVENT_KIND_UNSPECIFIED, pb.EVENT_KIND_GAP)
]


@dataclass(frozen=True, slots=True)
class EventLine:
    seq: int
    at: str
    kind: str
    labels: str
    text: str
    style: str = ""

    def plain(self) -> str:
        labels = f" {{{self.labels}}}" if self.labels else ""
        return f"{self.seq:>6} {self.at} {self.kind:<19}{labels} {self.text}"


def describe(event: pb.Event) -> EventLine:
    kind = event.WhichOneof("payload") or "unknown"
    text, style = _DESCRIBERS.get(kind, _unknown)(event)
    return EventLine(
        event.seq,
        fmt.instant(event.at, with_millis=True),
        kind,
        fmt.labels(event.labels),
        text,
        style,
    )


def _usage_recorded(event: pb.Event) -> tuple[str, str]:
    e = event.usage_recorded
    usage = e.usage
    tokens = usage.input_tokens + usage.output_tokens
    cost = fmt.usd(e.cost_micro_usd) if e.cost_known else "cost unknown"
    model = f" {usage.model}" if usage.model else ""
    run = f" run {e.run_id}" if e.run_id else ""
    return (
        f"{tokens:,} tokens (in {usage.input_tokens:,}, out {usage.output_tokens:,}) "
        f"{cost}{model}{run} -> {fmt.joined(e.ledger_keys)}",
        "",
    )


def _threshold_crossed(event: pb.Event) -> tuple[str, str]:
    c = event.threshold_crossed.crossing
    return (
        f"{c.ledger} {fmt.dimension(c.dimension)} crossed {c.percent}% "
        f"({fmt.severity(c.severity)}): {fmt.amount(c.dimension, c.used)} "
        f"of {fmt.amount(c.dimension, c.limit)}",
        fmt.SEVERITY_STYLES.get(c.severity, ""),
    )


def _denied(event: pb.Event) -> tuple[str, str]:
    e = event.denied
    b = e.blocker
    run = f" run {e.run_id}" if e.run_id else ""
    hard = b.enforcement in (pb.ENFORCEMENT_HARD, pb.ENFORCEMENT_UNSPECIFIED)
    return (
        f"{fmt.enforcement(b.enforcement)} {b.ledger} {fmt.dimension(b.dimension)}: "
        f"requested {fmt.amount(b.dimension, b.requested)}, used "
        f"{fmt.amount(b.dimension, b.used)} + reserved {fmt.amount(b.dimension, b.reserved)} "
        f"of {fmt.amount(b.dimension, b.limit)} (short by {fmt.amount(b.dimension, b.shortfall)})"
        f" request {e.request_id}{run}",
        "red" if hard else "yellow",
    )


def _ledger_exhausted(event: pb.Event) -> tuple[str, str]:
    e = event.ledger_exhausted
    return (
        f"{e.ledger} {fmt.dimension(e.dimension)} exhausted: "
        f"{fmt.amount(e.dimension, e.used)} of {fmt.amount(e.dimension, e.limit)}",
        "bold red",
    )


def _reservation_expired(event: pb.Event) -> tuple[str, str]:
    e = event.reservation_expired
    held = e.estimate.input_tokens + e.estimate.output_tokens
    return f"reservation {e.reservation_id} expired (held {held:,} tokens)", "yellow"


def _run_opened(event: pb.Event) -> tuple[str, str]:
    return f"run {event.run_opened.run_id} opened", ""


def _run_ended(event: pb.Event) -> tuple[str, str]:
    e = event.run_ended
    reason = fmt.enum_name(pb.RunEndReason, e.reason, "RUN_END_REASON_")
    style = "" if e.reason == pb.RUN_END_REASON_CLOSED else "yellow"
    return (
        f"run {e.run_id} ended ({reason}) after {fmt.span(e.duration)}: "
        f"{fmt.brief_totals(e.totals)}",
        style,
    )


def _window_rolled_over(event: pb.Event) -> tuple[str, str]:
    e = event.window_rolled_over
    return (
        f"{e.ledger} window {fmt.instant(e.window_start)} .. {fmt.instant(e.window_end)} "
        f"closed: {fmt.brief_totals(e.totals)}",
        "",
    )


def _ledger_closed(event: pb.Event) -> tuple[str, str]:
    e = event.ledger_closed
    reason = fmt.enum_name(pb.LedgerClosedReason, e.reason, "LEDGER_CLOSED_REASON_")
    return f"{e.ledger} closed ({reason}): {fmt.brief_totals(e.totals)}", ""


def _policy_changed(event: pb.Event) -> tuple[str, str]:
    e = event.policy_changed
    return f"policy {e.name} {'deleted' if e.deleted else 'created or replaced'}", "cyan"


def _gap(event: pb.Event) -> tuple[str, str]:
    oldest = event.gap.oldest_available_seq
    return (
        f"events up to seq {max(oldest - 1, 0)} are no longer retained; "
        f"continuing from seq {oldest}",
        "bold yellow",
    )


def _unknown(event: pb.Event) -> tuple[str, str]:
    return "(an event kind this budgetctl does not know; use --json)", "dim"


_DESCRIBERS: dict[str, Callable[[pb.Event], tuple[str, str]]] = {
    "usage_recorded": _usage_recorded,
    "threshold_crossed": _threshold_crossed,
    "denied": _denied,
    "ledger_exhausted": _ledger_exhausted,
    "reservation_expired": _reservation_expired,
    "run_opened": _run_opened,
    "run_ended": _run_ended,
    "window_rolled_over": _window_rolled_over,
    "ledger_closed": _ledger_closed,
    "policy_changed": _policy_changed,
    "gap": _gap,
}
