"""Per-ledger utilisation of the policies that opt in (`export_ledgers = true`).

The keys of such ledgers are learnt from the answers that name them (Check, Reserve,
Commit, Consume, OpenRun) and forgotten when a ledger closes: no scan of every ledger,
ever. At most `cap` ledgers are exported; past it one log line, and every ledger left
out counts in `budgetd.telemetry.series.dropped`. A policy whose `per` keys are not all
telemetry attributes would export many ledgers under one attribute set: its ledgers are
left out, with one log line naming the keys to allow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from budgetd.core import NotFound, Policy
from budgetd.core.dimensions import DIMENSION_NAMES
from budgetd.core.results import LedgerStatus
from budgetd.logs import fields
from budgetd.telemetry.series import MAX_LEFT_OUT, Attributes

log = logging.getLogger("budgetd.telemetry")

# (attributes, used, limit, remaining, utilisation) of one ledger dimension.
LedgerPoint = tuple[Attributes, int, int, int, float]


class ExportedLedgers:
    def __init__(
        self, cap: int, label_attributes: Callable[[Mapping[str, str]], Attributes]
    ) -> None:
        self.cap = cap
        self.policies: frozenset[str] = frozenset()  # names of the opted-in policies
        self._left_out: set[str] = set()  # ledgers left out at the cap, MAX_LEFT_OUT at most
        self._label_attributes = label_attributes
        self._keys: dict[str, None] = {}  # insertion-ordered set
        self._warned_cap = False
        self._warned: set[str] = set()

    def use_policies(self, policies: Iterable[Policy], allowed: frozenset[str]) -> None:
        """The engine's policies changed: which of them export, and may."""
        exporting = set()
        for policy in policies:
            if not policy.export_ledgers:
                continue
            missing = [key for key in policy.per if key not in allowed]
            if missing:
                if policy.name not in self._warned:
                    self._warned.add(policy.name)
                    log.warning(
                        "export_ledgers needs every per key to be a telemetry attribute: "
                        "this policy's ledgers are not exported",
                        extra=fields(policy=policy.name, not_attributes=",".join(missing)),
                    )
                continue
            exporting.add(policy.name)
        self.policies = frozenset(exporting)
        for key in [k for k in self._keys if k.split("{", 1)[0] not in exporting]:
            del self._keys[key]

    def seen(self, ledgers: Iterable[Any]) -> None:
        """Ledgers an answer named: (key, state) briefs or LedgerStatus values."""
        keys, policies = self._keys, self.policies
        for ledger in ledgers:
            key: str = ledger.key if isinstance(ledger, LedgerStatus) else ledger[0]
            if key in keys or key.split("{", 1)[0] not in policies:
                continue
            if len(keys) >= self.cap:
                if len(self._left_out) < MAX_LEFT_OUT:
                    self._left_out.add(key)
                if not self._warned_cap:
                    self._warned_cap = True
                    log.warning(
                        "per-ledger metrics cap reached: further ledgers are not exported",
                        extra=fields(max_ledger_series=self.cap),
                    )
                continue
            keys[key] = None

    @property
    def dropped(self) -> int:
        """Distinct ledgers left out at the cap (at least)."""
        return len(self._left_out)

    def closed(self, key: str) -> None:
        self._keys.pop(key, None)

    def points(self, status_of: Callable[[str], LedgerStatus]) -> list[LedgerPoint]:
        """Each exported ledger's capped dimensions now. Runs on the event loop (it
        reads the engine); a ledger that is gone is forgotten."""
        found: list[LedgerPoint] = []
        for key in list(self._keys):
            try:
                status = status_of(key)
            except NotFound:
                self._keys.pop(key, None)
                continue
            base: Attributes = {"budgetd.policy": status.policy}
            base |= self._label_attributes(status.labels)
            for dimension in status.dimensions:
                limit = dimension.limit
                used = dimension.used
                found.append(
                    (
                        base | {"budgetd.dimension": DIMENSION_NAMES[dimension.dimension]},
                        used,
                        limit,
                        dimension.remaining,
                        used / limit if limit else 0.0,
                    )
                )
        return found

    def __len__(self) -> int:
        return len(self._keys)
