"""Translation of wire events (`budgetd.v1.Event`) into `budgetd_client.events`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from budgetd_client import _wire as w
from budgetd_client import events as ev
from budgetd_client.enums import (
    Dimension,
    EventKind,
    LedgerClosedReason,
    RunEndReason,
    from_wire,
)
from budgetd_client.errors import BudgetdError
from budgetd_client.v1 import budget_pb2 as pb

log = logging.getLogger("budgetd_client")


def _usage_recorded(m: pb.Event.UsageRecorded) -> ev.UsageRecorded:
    return ev.UsageRecorded(
        m.request_id,
        m.run_id,
        w.usage(m.usage),
        m.cost_micro_usd,
        m.cost_known,
        tuple(m.ledger_keys),
    )


def _ledger_exhausted(m: pb.Event.LedgerExhausted) -> ev.LedgerExhausted:
    return ev.LedgerExhausted(
        m.policy, m.ledger, from_wire(Dimension, m.dimension), m.used, m.limit
    )


def _run_ended(m: pb.Event.RunEnded) -> ev.RunEnded:
    return ev.RunEnded(
        m.run_id, from_wire(RunEndReason, m.reason), w.totals(m.totals), w.seconds(m.duration)
    )


def _window_rolled_over(m: pb.Event.WindowRolledOver) -> ev.WindowRolledOver:
    return ev.WindowRolledOver(
        m.policy, m.ledger, w.instant(m.window_start), w.instant(m.window_end), w.totals(m.totals)
    )


def _ledger_closed(m: pb.Event.LedgerClosed) -> ev.LedgerClosed:
    return ev.LedgerClosed(
        m.policy, m.ledger, from_wire(LedgerClosedReason, m.reason), w.totals(m.totals)
    )


# The payload field's name is the EventKind's name.
_PAYLOADS: dict[str, Callable[[Any], ev.Payload]] = {
    "usage_recorded": _usage_recorded,
    "threshold_crossed": lambda m: ev.ThresholdCrossed(w.crossing(m.crossing)),
    "denied": lambda m: ev.Denied(w.blocker(m.blocker), m.request_id, m.run_id),
    "ledger_exhausted": _ledger_exhausted,
    "reservation_expired": lambda m: ev.ReservationExpired(m.reservation_id, w.usage(m.estimate)),
    "run_opened": lambda m: ev.RunOpened(m.run_id),
    "run_ended": _run_ended,
    "window_rolled_over": _window_rolled_over,
    "ledger_closed": _ledger_closed,
    "policy_changed": lambda m: ev.PolicyChanged(m.name, m.deleted),
    "gap": lambda m: ev.Gap(m.oldest_available_seq),
}


def event(message: pb.Event) -> ev.Event:
    """The typed event. A payload this client cannot read (a newer budgetd: a new kind, or
    a new enum value inside a known one) is an event of kind `unknown`, logged: one odd
    event must not end a subscription."""
    field = message.WhichOneof("payload") or ""
    kind: EventKind = EventKind.unknown
    payload: ev.Payload = ev.Unknown(field)
    try:
        convert = _PAYLOADS.get(field)
        if convert is not None:
            kind, payload = EventKind(field), convert(getattr(message, field))
    except BudgetdError as error:
        log.warning("budgetd_client: event %d delivered as kind unknown: %s", message.seq, error)
    else:
        if kind is EventKind.unknown:
            log.warning(
                "budgetd_client: event %d has a payload unknown to this client (%s); delivered"
                " as kind unknown (a newer budgetd? upgrade budgetd_client)",
                message.seq,
                field or "not in this client's proto",
            )
    return ev.Event(
        seq=message.seq,
        kind=kind,
        at=w.instant(message.at),
        labels=dict(message.labels),
        payload=payload,
    )
