"""Mutations as small replayable records: the journal's unit.

Every state change of the engine is one `Engine.apply(Mutation)`: an operation's name,
its plain arguments and an instant. Recording `(op, now, args)` after each successful
call and applying the records again, in order, to the state the first call started from
yields the same state: the engine reads no clock and no randomness. `encode`/`decode`
turn records into JSON-compatible data and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from budgetd.core.dimensions import Dimension
from budgetd.core.errors import InvalidArgument
from budgetd.core.limits import Limits
from budgetd.core.policy import Policy
from budgetd.core.usage import Usage, usage_from_plain, usage_plain

MUTATING_OPS = frozenset(
    {
        "reserve",
        "commit",
        "release",
        "consume",
        "open_run",
        "heartbeat",
        "close_run",
        "expire",
        "reset_ledger",
        "set_ledger_limits",
        "put_policy",
        "delete_policy",
        "replace_policies",
        "compact",
        "share_synced",
        "share_settling",
        "shares_unreachable",
        "share_unreachable",  # (read only: journals written before shares_unreachable)
        "share_settled_up",
        "open_global",
    }
)
_USAGE_ARGS = ("estimate", "actual", "usage")


@dataclass(slots=True)
class Mutation:
    op: str
    now: float
    args: Mapping[str, Any]


def encode(mutation: Mutation) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name, raw in mutation.args.items():
        value = raw
        if isinstance(raw, Usage):
            value = usage_plain(raw)
        elif isinstance(raw, Policy):
            value = raw.to_mapping()
        elif name == "policies":
            value = [policy.to_mapping() for policy in raw]
        elif name == "caps":
            value = [[int(d), limit] for d, limit in raw]
        elif isinstance(raw, Mapping):
            value = dict(raw)
        args[name] = value
    return {"op": mutation.op, "now": mutation.now, "args": args}


def decode(data: Mapping[str, Any], limits: Limits | None = None) -> Mutation:
    """A record back to a mutation; policies are parsed against `limits` (the engine's:
    they were accepted under them)."""
    op = data.get("op")
    now = data.get("now")
    raw = data.get("args")
    if not isinstance(op, str) or op not in MUTATING_OPS:
        raise InvalidArgument("op", f"unknown mutation {op!r}")
    if not isinstance(now, int | float) or not isinstance(raw, Mapping):
        raise InvalidArgument("mutation", "needs a numeric 'now' and an 'args' table")
    args: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _USAGE_ARGS:
            args[name] = usage_from_plain(value)
        elif name == "policy":
            args[name] = Policy.from_mapping(value, limits)
        elif name == "policies":
            args[name] = tuple(Policy.from_mapping(item, limits) for item in value)
        elif name == "caps":
            args[name] = tuple((Dimension(d), limit) for d, limit in value)
        else:
            args[name] = value
    return Mutation(op, float(now), args)
