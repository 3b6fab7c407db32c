"""The engine's whole state as plain data, and back: what a snapshot stores.

`Engine.export_state` produces JSON-compatible data (dicts, lists, str, int, float, bool,
None); `Engine.from_state` rebuilds an engine that behaves exactly like the original —
same ledgers, holds, runs, remembered request ids, counters and eviction position.
Derived structures (expiry heaps, thresholds' next triggers) are rebuilt, not stored.
`Engine.export_state` / `Engine.from_state` walk the engine's own structures; the
helpers here turn each record (ledger, hold, run, remembered answer) into plain data and
back, reading only the records' public fields.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

from budgetd.core import events as events_module
from budgetd.core import results as results_module
from budgetd.core.digest import digest_of
from budgetd.core.dimensions import Dimension, upgraded_vector
from budgetd.core.events import Totals
from budgetd.core.ledger import NO_HOLDS, NO_TIME, Ledger, format_key, parse_key
from budgetd.core.policy import Enforcement, LedgerState, Policy, Severity, WindowKind
from budgetd.core.records import Deadline, Reservation, Run
from budgetd.core.usage import Usage, usage_from_plain, usage_plain

__all__ = ["usage_from_plain", "usage_plain"]  # used by the engine through this module

FORMAT = "budgetd.state/3"
# Read too. Format 2: global shares of that release's rules (a ledger opened again in
# its window had a share of its own, its settles numbered from 1; lifetime windows began
# at the ledger's creation), which its journal follows (see Shares.earlier_release).
# Format 1: counter vectors of 11 slots, latency in whole milliseconds, answers without
# request digests.
FORMATS_READ = (FORMAT, "budgetd.state/2", "budgetd.state/1")

_DATACLASSES: dict[str, type] = {
    cls.__name__: cls
    for module in (results_module, events_module)
    for cls in vars(module).values()
    if isinstance(cls, type) and is_dataclass(cls)
}
_DATACLASSES["Usage"] = Usage
# Field names per dataclass, looked up once: `fields()` per value is most of the cost.
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _DATACLASSES.values()
}
_SCALARS = frozenset({str, int, bool})
_ENUMS: dict[str, type[Enum]] = {
    cls.__name__: cls
    for cls in (
        Dimension,
        Enforcement,
        LedgerState,
        Severity,
        results_module.Decision,
        events_module.RunEndReason,
        events_module.LedgerClosedReason,
    )
}


def to_plain(value: Any) -> Any:
    """Results and events as JSON-compatible data, tagged so `from_plain` can rebuild them."""
    if value is None or type(value) in _SCALARS:
        return value
    kind = type(value)
    names = _FIELDS.get(kind)
    if names is not None:  # a result or event dataclass: most of a snapshot's answers
        data = {"$type": kind.__name__}
        for name in names:
            data[name] = to_plain(getattr(value, name))
        return data
    if isinstance(value, Enum):
        return {"$enum": kind.__name__, "value": value.value}
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isinf(value) else value
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {"$map": {str(k): to_plain(v) for k, v in value.items()}}
    raise TypeError(f"cannot export {kind.__name__}")


def from_plain(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(from_plain(item) for item in value)
    if not isinstance(value, dict):
        return value
    if "$enum" in value:
        return _ENUMS[value["$enum"]](value["value"])
    if "$map" in value:
        return {k: from_plain(v) for k, v in value["$map"].items()}
    kind = _DATACLASSES[value["$type"]]
    args = {k: from_plain(v) for k, v in value.items() if k != "$type"}
    if kind is Usage:
        return usage_from_plain(args)
    if kind is Totals and "latency_ms_sum" in args:  # format 1: whole milliseconds
        args["latency_us_sum"] = args.pop("latency_ms_sum") * 1000
    if kind in _LEDGER_EVENTS and "labels" not in args:  # format 1: labels from the key
        parsed = parse_key(args["ledger"])
        args["labels"] = parsed[1] if parsed is not None else {}
        if kind is events_module.ThresholdCrossed:
            args["remaining"] = max(0, args["limit"] - args["used"])
    return kind(**args)


_LEDGER_EVENTS = (
    events_module.ThresholdCrossed,
    events_module.LedgerExhausted,
    events_module.WindowRolledOver,
    events_module.LedgerClosed,
)


def _time(value: float) -> float | None:
    return None if math.isinf(value) else value


def _untime(value: float | None) -> float:
    return math.inf if value is None else float(value)


# --- export -----------------------------------------------------------------------------


def plain_done(state: dict[str, Any]) -> None:
    """Finish an `export_state(..., plain_answers=False)`: answers to plain data."""
    state["done"] = [
        [rid, op, at, to_plain(result), digest_of(op, remembered), size]
        for rid, op, at, result, remembered, size in state["done"]
    ]


def ledger_plain(ledger: Ledger) -> dict[str, Any]:
    return {
        "ident": list(ledger.ident),
        "serial": ledger.serial,
        "caps": [[int(d), limit] for d, limit in ledger.caps],
        "caps_overridden": ledger.caps_overridden,
        "used": ledger.counts(),
        "reserved": list(ledger.reserved),
        "holds": ledger.holds,
        "fired": ledger.fired,
        "first_use": ledger.first_use,
        "last_use": ledger.last_use,
        "freed_at": ledger.freed_at,
        "anchor": ledger.anchor,
        "window_start": ledger.window_start,
        "window_end": _time(ledger.window_end),
        "buckets": None
        if ledger.buckets is None
        else [[index, list(vector)] for index, vector in ledger.buckets],
    }


def reservation_plain(r: Reservation) -> dict[str, Any]:
    return {
        "id": r.id,
        "labels": dict(r.labels),
        "estimate": usage_plain(r.estimate),
        "amounts": list(r.amounts),
        "idents": [list(ledger.ident) for ledger in r.ledgers if ledger.alive],
        "expires_at": r.expires_at,
        "run_id": r.run_id,
        "created_at": r.created_at,
    }


def deadline_plain(d: Deadline | None) -> list[Any] | None:
    if d is None:
        return None
    return [d.at, d.policy, d.ledger, d.limit_ms, d.enforcement.value, d.reported]


def run_plain(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "labels": dict(run.labels),
        "opened_at": run.opened_at,
        "ttl_s": run.ttl_s,
        "last_seen": run.last_seen,
        "idents": [list(ledger.ident) for ledger in run.ledgers if ledger.alive],
        "deadlines": [deadline_plain(d) for d in run.deadlines],
        "totals": list(run.totals),
        "first_use": run.first_use,
        "last_use": run.last_use,
    }


# --- restore ----------------------------------------------------------------------------


def ledger_from_plain(policy: Policy, item: Mapping[str, Any]) -> Ledger:
    ident = tuple(item["ident"])
    # Built through __init__ and then overwritten: the compiled core's classes cannot be
    # created with __new__ alone.
    ledger = Ledger(format_key(ident, policy.per), policy, item["anchor"], item["serial"])
    ledger.caps = tuple((Dimension(d), limit) for d, limit in item["caps"])
    ledger.caps_overridden = item["caps_overridden"]
    ledger.set_counts(upgraded_vector(item["used"]))
    holds = item["holds"]
    reserved = list(item["reserved"])
    # Nothing held: the shared list of zeros (see NO_HOLDS), as `release` leaves it.
    ledger.reserved = NO_HOLDS if holds == 0 and not any(reserved) else reserved
    ledger.holds = holds
    ledger.fired = item["fired"]
    ledger.first_at = _unuse(item["first_use"])
    ledger.last_at = _unuse(item["last_use"])
    ledger.freed_at = item.get("freed_at", 0.0)
    buckets = item["buckets"]
    ledger.buckets = None if buckets is None else deque((i, upgraded_vector(v)) for i, v in buckets)
    ledger.window_start = item["window_start"]
    ledger.window_end = _untime(item["window_end"])
    if policy.is_global and policy.window.kind is WindowKind.LIFETIME:
        # (Stored before a global lifetime window started at 0, its index in Redis, on
        # every sidecar: the same window, by its start now; see Share.legacy_starts.)
        ledger.anchor = ledger.window_start = 0.0
    ledger.reset_triggers()
    ledger.set_state(LedgerState.OK)
    # Fired bits were restored: recomputing triggers and state fires nothing new.
    ledger.refresh_levels(ledger.last_use or ledger.anchor, [])
    return ledger


def _unuse(value: float | None) -> float:
    """A stored first or last use as a ledger keeps it (NO_TIME for none)."""
    return NO_TIME if value is None else float(value)


def deadline_from_plain(item: list[Any]) -> Deadline:
    at, policy, ledger, limit_ms, enforcement, reported = item
    return Deadline(at, policy, ledger, limit_ms, Enforcement(enforcement), reported)


def _ledgers(ledgers: Callable[[list[str]], Ledger], idents: list[list[str]]) -> tuple[Ledger, ...]:
    return tuple(ledgers(ident) for ident in idents)


def run_from_plain(ledgers: Callable[[list[str]], Ledger], item: Mapping[str, Any]) -> Run:
    """A run from its plain data; `ledgers` finds a ledger by its ident."""
    return Run(
        item["id"],
        item["labels"],
        item["opened_at"],
        item["ttl_s"],
        item["last_seen"],
        _ledgers(ledgers, item["idents"]),
        [deadline_from_plain(d) for d in item["deadlines"]],
        upgraded_vector(item["totals"]),
        item["first_use"],
        item["last_use"],
    )
