"""Policies: which requests a rule applies to, how it splits into ledgers, and its caps.

A policy is immutable. `Policy.from_mapping` is the one parser for every source (the
config file, `PutPolicy`, a snapshot) and reports the failing key and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum, IntEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from budgetd.core.dimensions import DIMENSION_BY_NAME, DIMENSION_NAMES, Dimension
from budgetd.core.errors import InvalidArgument
from budgetd.core.limits import Limits
from budgetd.core.usage import LABEL_KEY

POLICY_NAME = re.compile(r"[a-z0-9_.-]{1,64}")
MAX_DESCRIPTION_CHARS = 1024

E = TypeVar("E", bound=Enum)


class Enforcement(Enum):
    HARD = "hard"  # deny
    SOFT = "soft"  # allow, warn
    SHADOW = "shadow"  # allow, report what hard would have denied


class Severity(IntEnum):
    WARNING = 1
    CRITICAL = 2
    FINAL = 3


class LedgerState(IntEnum):
    """OK, the severity of the highest threshold crossed, or EXHAUSTED at >= 100 % of a cap."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    FINAL = 3
    EXHAUSTED = 4


class Scope(Enum):
    """Where a policy's caps hold: on this sidecar, or across every sidecar sharing one
    Redis (each serving from a slice of the cap it leases)."""

    LOCAL = "local"
    GLOBAL = "global"


class OnUnavailable(Enum):
    """What a global policy's ledgers do while Redis cannot be reached."""

    DENY = "deny"  # serve what is still leased, then deny
    ALLOW_LOCAL = "allow_local"  # judge by the cap and what this sidecar last knew


# Dimensions a global policy cannot cap: they measure time on one host (a run's wall
# clock, a window's age), not a quantity sidecars can share.
UNSHARED_DIMENSIONS = frozenset({Dimension.RUN_DURATION_MS, Dimension.WALL_CLOCK_MS})


class WindowKind(Enum):
    LIFETIME = "lifetime"
    CALENDAR = "calendar"
    FIXED = "fixed"
    SLIDING = "sliding"


class CalendarUnit(Enum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"  # starts on Monday
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Threshold:
    percent: int
    severity: Severity


DEFAULT_THRESHOLDS = (
    Threshold(75, Severity.WARNING),
    Threshold(90, Severity.CRITICAL),
    Threshold(95, Severity.FINAL),
)


@dataclass(frozen=True, slots=True)
class Window:
    """When a ledger's counters start again from zero."""

    kind: WindowKind = WindowKind.LIFETIME
    unit: CalendarUnit | None = None
    time_zone: str = "UTC"
    duration_s: int = 0

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


LIFETIME = Window()


@dataclass(frozen=True, slots=True)
class Policy:
    """One operator rule. Ledgers are one per (policy, values of the `per` keys)."""

    name: str
    match: tuple[tuple[str, str], ...] = ()
    per: tuple[str, ...] = ()
    caps: tuple[tuple[Dimension, int], ...] = ()
    window: Window = LIFETIME
    enforcement: Enforcement = Enforcement.HARD
    thresholds: tuple[Threshold, ...] = DEFAULT_THRESHOLDS
    evictable: bool = True
    close_with_run: bool = False
    description: str = ""
    # A COST_MICRO_USD cap lets an estimate it cannot price through (as cost 0) instead
    # of blocking it.
    unpriced_allowed: bool = False
    # Values for `per` keys a request lacks: such requests share that ledger.
    missing: tuple[tuple[str, str], ...] = ()
    # Seconds without use, hold or run after which a ledger closes (0 = never).
    idle_ttl_s: int = 0
    # Telemetry exports each ledger's used / limit / remaining (the core only keeps it).
    export_ledgers: bool = False
    scope: Scope = Scope.LOCAL
    on_unavailable: OnUnavailable = OnUnavailable.DENY  # global policies only
    # Label requirements derived from match and per, checked in one loop per request.
    requirements: tuple[tuple[str, str | None], ...] = field(init=False, compare=False)
    # `per` keys with their `missing` default ("" for keys without one: those are
    # required by `requirements`, so a matching request always has them).
    per_defaults: tuple[tuple[str, str], ...] = field(init=False, compare=False)
    # `name{key=` for a policy with one per key: its ledgers' keys are that, the value
    # (escaped) and `}` (ledger.key_of); "" otherwise.
    key_prefix: str = field(init=False, compare=False, repr=False)
    # scope is GLOBAL: a field, read on the hot path for every ledger.
    is_global: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        required: dict[str, str | None] = {k: (None if v == "*" else v) for k, v in self.match}
        defaulted = {k for k, _ in self.missing}
        for key in self.per:
            if key not in defaulted:
                required.setdefault(key, None)
        object.__setattr__(self, "requirements", tuple(required.items()))
        defaults = dict(self.missing)
        object.__setattr__(
            self, "per_defaults", tuple((key, defaults.get(key, "")) for key in self.per)
        )
        prefix = f"{self.name}{{{self.per[0]}=" if len(self.per) == 1 else ""
        object.__setattr__(self, "key_prefix", prefix)
        object.__setattr__(self, "is_global", self.scope is Scope.GLOBAL)

    @property
    def is_meter(self) -> bool:
        return not self.caps

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, wanted in self.requirements:
            value = labels.get(key)
            if value is None or (wanted is not None and value != wanted):
                return False
        return True

    def cap(self, dimension: Dimension) -> int | None:
        for dim, limit in self.caps:
            if dim == dimension:
                return limit
        return None

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], limits: Limits | None = None, where: str = "policy"
    ) -> Policy:
        return _parse_policy(data, limits or Limits(), where)

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of `from_mapping`: plain data for config files and snapshots."""
        window: dict[str, Any] = {"kind": self.window.kind.value}
        if self.window.kind is WindowKind.CALENDAR:
            assert self.window.unit is not None
            window["unit"] = self.window.unit.value
            window["time_zone"] = self.window.time_zone
        elif self.window.kind in (WindowKind.FIXED, WindowKind.SLIDING):
            window["duration_s"] = self.window.duration_s
        return {
            "name": self.name,
            "description": self.description,
            "match": dict(self.match),
            "per": list(self.per),
            "caps": {DIMENSION_NAMES[d]: limit for d, limit in self.caps},
            "window": window,
            "enforcement": self.enforcement.value,
            "thresholds": [
                {"percent": t.percent, "severity": t.severity.name.lower()} for t in self.thresholds
            ],
            "evictable": self.evictable,
            "close_with_run": self.close_with_run,
            "unpriced": "allow" if self.unpriced_allowed else "deny",
            "missing": dict(self.missing),
            "idle_ttl_s": self.idle_ttl_s,
            "export_ledgers": self.export_ledgers,
            # Only when global: the plain data of every local policy is as it always was.
            **(
                {"scope": self.scope.value, "on_unavailable": self.on_unavailable.value}
                if self.is_global
                else {}
            ),
        }


_DURATION = re.compile(r"(\d+)(s|m|h|d|w)")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_POLICY_KEYS = {
    "name",
    "description",
    "match",
    "per",
    "caps",
    "window",
    "enforcement",
    "thresholds",
    "evictable",
    "close_with_run",
    "unpriced",
    "missing",
    "idle_ttl",
    "idle_ttl_s",
    "export_ledgers",
    "scope",
    "on_unavailable",
}
_WINDOW_KEYS = {"kind", "unit", "time_zone", "duration", "duration_s"}


# Bounds of every duration a policy holds: windows, run and wall-clock caps, idle ttls.
# Past ten years a window is a lifetime, and instants stay far inside the range of a
# protobuf Timestamp.
MAX_DURATION_S = 10 * 366 * 86_400
MAX_SLIDING_S = 86_400
MAX_IDLE_TTL_S = 366 * 86_400


def parse_duration_s(value: object, where: str, maximum: int = MAX_DURATION_S) -> int:
    """Whole seconds from an int or a string such as "90s", "30m", "2h", "30d", "1w"."""
    if isinstance(value, bool):
        raise InvalidArgument(where, "must be a duration such as 90, '90s', '2h' or '30d'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        if len(m.group(1)) > 12:
            raise InvalidArgument(where, f"must be at most {maximum} s")
        seconds = int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise InvalidArgument(where, "must be a duration such as 90, '90s', '2h' or '30d'")
    if seconds <= 0:
        raise InvalidArgument(where, "must be a positive duration")
    if seconds > maximum:
        raise InvalidArgument(where, f"must be at most {maximum} s")
    return seconds


def _parse_policy(data: Mapping[str, Any], limits: Limits, where: str) -> Policy:
    if not isinstance(data, Mapping):
        raise InvalidArgument(where, "must be a table")
    unknown = sorted(set(data) - _POLICY_KEYS)
    if unknown:
        raise InvalidArgument(
            f"{where}.{unknown[0]}", f"unknown key (known: {sorted(_POLICY_KEYS)})"
        )
    name = data.get("name")
    if not isinstance(name, str) or POLICY_NAME.fullmatch(name) is None:
        raise InvalidArgument(f"{where}.name", "required; must match [a-z0-9_.-]{1,64}")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument(
            f"{where}.description", f"must be a string of at most {MAX_DESCRIPTION_CHARS} chars"
        )
    # Checked in this order (budgetctl's copy of the grammar keeps it, so a file's first
    # mistake reads the same from both).
    match = _parse_match(data.get("match", {}), limits, f"{where}.match")
    per = _parse_per(data.get("per", []), limits, f"{where}.per")
    caps = parse_caps(data.get("caps", {}), limits, f"{where}.caps")
    window = _parse_window(data.get("window", "lifetime"), f"{where}.window")
    if window.kind is WindowKind.SLIDING and any(d is Dimension.WALL_CLOCK_MS for d, _ in caps):
        raise InvalidArgument(
            f"{where}.caps.wall_clock", "not allowed with a sliding window (it never starts)"
        )
    enforcement = _parse_enum(Enforcement, data.get("enforcement", "hard"), f"{where}.enforcement")
    thresholds = _parse_thresholds(data.get("thresholds"), limits, f"{where}.thresholds")
    evictable = _parse_bool(data.get("evictable", True), f"{where}.evictable")
    close_with_run = _parse_bool(data.get("close_with_run", False), f"{where}.close_with_run")
    unpriced = _parse_enum(_Unpriced, data.get("unpriced", "deny"), f"{where}.unpriced")
    scope = _parse_enum(Scope, data.get("scope", "local"), f"{where}.scope")
    if scope is Scope.GLOBAL:
        on_unavailable = _parse_global(data, caps, window, where)
        evictable = _parse_bool(data.get("evictable", False), f"{where}.evictable")
    elif "on_unavailable" in data:
        raise InvalidArgument(f"{where}.on_unavailable", "only for scope = 'global'")
    else:
        on_unavailable = OnUnavailable.DENY
    return Policy(
        name=name,
        description=description,
        match=match,
        per=per,
        caps=caps,
        window=window,
        enforcement=enforcement,
        thresholds=thresholds,
        evictable=evictable,
        close_with_run=close_with_run,
        unpriced_allowed=unpriced is _Unpriced.ALLOW,
        missing=_parse_missing(data.get("missing", {}), per, limits, f"{where}.missing"),
        idle_ttl_s=_parse_idle_ttl(data, where),
        export_ledgers=_parse_bool(data.get("export_ledgers", False), f"{where}.export_ledgers"),
        scope=scope,
        on_unavailable=on_unavailable,
    )


def _parse_global(
    data: Mapping[str, Any], caps: tuple[tuple[Dimension, int], ...], window: Window, where: str
) -> OnUnavailable:
    """The rules only a global policy has; its on_unavailable. Its ledgers are shared
    through Redis, so nothing may close one on one sidecar alone (eviction, idle ttl,
    a run's end), and its windows must begin at the same instant on every sidecar."""
    for dimension, _ in caps:
        if dimension in UNSHARED_DIMENSIONS:
            raise InvalidArgument(
                f"{where}.caps.{DIMENSION_NAMES[dimension]}",
                "not allowed with scope = 'global' (it is measured on one host)",
            )
    if window.kind is WindowKind.SLIDING:
        raise InvalidArgument(
            f"{where}.window", "scope = 'global' needs a lifetime, calendar or fixed window"
        )
    if window.kind is not WindowKind.LIFETIME and any(d is Dimension.CONCURRENCY for d, _ in caps):
        raise InvalidArgument(f"{where}.caps.concurrency", GLOBAL_CONCURRENCY_RULE)
    for key, wrong in (("evictable", True), ("close_with_run", True)):
        if data.get(key) is wrong:
            raise InvalidArgument(f"{where}.{key}", "not allowed with scope = 'global'")
    if data.get("idle_ttl_s", data.get("idle_ttl")) not in (None, 0):
        raise InvalidArgument(f"{where}.idle_ttl", "not allowed with scope = 'global'")
    return _parse_enum(OnUnavailable, data.get("on_unavailable", "deny"), f"{where}.on_unavailable")


# Concurrency slots are held across windows (a gauge), Redis counts them per window.
GLOBAL_CONCURRENCY_RULE = (
    "with scope = 'global' only under a lifetime window (slots outlive a window);"
    " cap concurrency in a global policy of its own"
)


class _Unpriced(Enum):
    DENY = "deny"
    ALLOW = "allow"


def _parse_missing(
    value: object, per: tuple[str, ...], limits: Limits, where: str
) -> tuple[tuple[str, str], ...]:
    pairs = _parse_match(value, limits, where)
    for key, default in pairs:
        if key not in per:
            raise InvalidArgument(f"{where}.{key}", f"not a `per` key (per: {list(per)})")
        if default == "*":
            raise InvalidArgument(f"{where}.{key}", "a default value, not '*'")
    return pairs


def _parse_idle_ttl(data: Mapping[str, Any], where: str) -> int:
    raw = data.get("idle_ttl_s", data.get("idle_ttl"))
    if raw is None or raw == 0:
        return 0
    return parse_duration_s(raw, f"{where}.idle_ttl", MAX_IDLE_TTL_S)


def _parse_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(where, "must be true or false")
    return value


def _parse_enum(kind: type[E], value: object, where: str) -> E:
    if isinstance(value, kind):
        return value
    choices = [m.value for m in kind]
    if not isinstance(value, str) or value.lower() not in choices:
        raise InvalidArgument(where, f"must be one of {choices}, got {value!r}")
    return kind(value.lower())


def _parse_match(value: object, limits: Limits, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(where, "must be a table of label = value ('*' = present)")
    if len(value) > limits.max_labels:
        raise InvalidArgument(where, f"at most {limits.max_labels} labels")
    pairs = []
    for key, wanted in value.items():
        _check_label_key(key, limits, f"{where}.{key}")
        if (
            not isinstance(wanted, str)
            or not wanted
            or len(wanted.encode()) > (limits.max_label_value_bytes)
        ):
            raise InvalidArgument(
                f"{where}.{key}",
                f"must be a non-empty string of <= {limits.max_label_value_bytes} bytes",
            )
        pairs.append((key, wanted))
    return tuple(sorted(pairs))


def _parse_per(value: object, limits: Limits, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise InvalidArgument(where, "must be a list of label keys")
    if len(value) > limits.max_labels:
        raise InvalidArgument(where, f"at most {limits.max_labels} keys")
    for i, key in enumerate(value):
        _check_label_key(key, limits, f"{where}[{i}]")
    if len(set(value)) != len(value):
        raise InvalidArgument(where, "keys must be distinct")
    return tuple(value)


def _check_label_key(key: object, limits: Limits, where: str) -> None:
    if (
        not isinstance(key, str)
        or len(key) > limits.max_label_key_chars
        or (LABEL_KEY.fullmatch(key) is None)
    ):
        raise InvalidArgument(where, "label keys match [a-z0-9_.-]{1,64}")


def parse_caps(value: object, limits: Limits, where: str) -> tuple[tuple[Dimension, int], ...]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(
            where, f"must be a table of dimension = limit ({sorted(DIMENSION_BY_NAME)})"
        )
    caps: dict[Dimension, int] = {}
    for name, raw in value.items():
        dimension, limit = _parse_cap(name, raw, limits, f"{where}.{name}")
        if dimension in caps:
            raise InvalidArgument(
                f"{where}.{name}", f"{DIMENSION_NAMES[dimension]} is capped twice"
            )
        caps[dimension] = limit
    return tuple(sorted(caps.items()))


def _parse_cap(name: object, raw: object, limits: Limits, where: str) -> tuple[Dimension, int]:
    # Friendly spellings: cost_usd = "12.50" and run_duration = "2h" convert exactly.
    if name == "cost_usd":
        return Dimension.COST_MICRO_USD, usd_to_micro(raw, where)
    if name == "run_duration":
        return Dimension.RUN_DURATION_MS, parse_duration_s(raw, where) * 1000
    if name == "wall_clock":
        return Dimension.WALL_CLOCK_MS, parse_duration_s(raw, where) * 1000
    dimension = DIMENSION_BY_NAME.get(name) if isinstance(name, str) else None
    if dimension is None:
        known = sorted([*DIMENSION_BY_NAME, "cost_usd", "run_duration", "wall_clock"])
        raise InvalidArgument(where, f"unknown dimension (known: {known})")
    maximum = (
        limits.max_cost_micro_usd if dimension is Dimension.COST_MICRO_USD else limits.max_tokens
    )
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= maximum:
        raise InvalidArgument(where, f"must be an integer in 0..{maximum}")
    return dimension, raw


def usd_to_micro(value: object, where: str) -> int:
    """Exact conversion of a USD amount (str, int or Decimal; never float) to micro-USD."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidArgument(where, 'must be a USD amount as a string such as "12.50"')
    try:
        micro = Decimal(value) * 1_000_000
    except InvalidOperation:
        raise InvalidArgument(where, f"not a number: {value!r}") from None
    if not micro.is_finite() or micro < 0 or micro != micro.to_integral_value():
        raise InvalidArgument(where, "must be a non-negative amount with at most 6 decimals")
    return int(micro)


def _parse_window(value: object, where: str) -> Window:
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, Mapping):
        raise InvalidArgument(where, "must be a window kind or a table with 'kind'")
    unknown = sorted(set(value) - _WINDOW_KEYS)
    if unknown:
        raise InvalidArgument(
            f"{where}.{unknown[0]}", f"unknown key (known: {sorted(_WINDOW_KEYS)})"
        )
    kind = _parse_enum(WindowKind, value.get("kind", "lifetime"), f"{where}.kind")
    if kind is WindowKind.LIFETIME:
        return LIFETIME
    if kind is WindowKind.CALENDAR:
        unit = _parse_enum(CalendarUnit, value.get("unit", "day"), f"{where}.unit")
        zone = value.get("time_zone", "UTC")
        try:
            if not isinstance(zone, str):
                raise ValueError(zone)
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(
                f"{where}.time_zone", f"unknown IANA time zone {zone!r}"
            ) from None
        return Window(WindowKind.CALENDAR, unit=unit, time_zone=zone)
    raw = value.get("duration_s", value.get("duration"))
    if raw is None:
        raise InvalidArgument(f"{where}.duration", f"required for a {kind.value} window")
    maximum = MAX_SLIDING_S if kind is WindowKind.SLIDING else MAX_DURATION_S
    return Window(kind, duration_s=parse_duration_s(raw, f"{where}.duration", maximum))


def _parse_thresholds(value: object, limits: Limits, where: str) -> tuple[Threshold, ...]:
    if value is None:
        return DEFAULT_THRESHOLDS
    if not isinstance(value, list | tuple):
        raise InvalidArgument(where, "must be a list of {percent, severity}")
    if len(value) > limits.max_thresholds:
        raise InvalidArgument(where, f"at most {limits.max_thresholds} thresholds")
    thresholds = []
    for i, item in enumerate(value):
        if isinstance(item, Threshold):
            thresholds.append(item)
            continue
        if not isinstance(item, Mapping):
            raise InvalidArgument(f"{where}[{i}]", "must be a table {percent, severity}")
        percent = item.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 1000:
            raise InvalidArgument(f"{where}[{i}].percent", "must be an integer in 1..1000")
        severity = item.get("severity", "warning")
        if not isinstance(severity, str) or severity.upper() not in Severity.__members__:
            raise InvalidArgument(
                f"{where}[{i}].severity", f"must be one of {[s.name.lower() for s in Severity]}"
            )
        thresholds.append(Threshold(percent, Severity[severity.upper()]))
    percents = [t.percent for t in thresholds]
    if len(set(percents)) != len(percents):
        raise InvalidArgument(where, "percents must be distinct")
    return tuple(sorted(thresholds, key=lambda t: t.percent))


def trigger_amount(limit: int, percent: int) -> int:
    """The smallest usage at which `percent` of `limit` is reached (at least 1)."""
    return max(1, -((-limit * percent) // 100))
