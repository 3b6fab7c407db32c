"""The policy grammar of the daemon's config file, parsed straight into `budgetd.v1.Policy`.

budgetctl installs without the daemon, so it cannot call the daemon's parser
(`budgetd.core.Policy.from_mapping`); this is the same grammar with the same rules, the
same bounds (the daemon's default `Limits`) and the same words, so that a policy file is
checked before anything is sent and its mistakes read like the config file's.
tests/service/test_policy_grammar.py holds the two parsers to agreement: same message
for what both accept, same key and reason for what both refuse.

A daemon started with smaller limits can still refuse what passes here: that is its
answer to PutPolicy (exit 5 or 6), reported with the policies already put.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from budgetd_client.v1 import budget_pb2 as pb

# The daemon's defaults (budgetd.core.limits.Limits, budgetd.core.policy).
MAX_LABELS = 16
MAX_LABEL_KEY_CHARS = 64
MAX_LABEL_VALUE_BYTES = 256
MAX_TOKENS = 10**12
MAX_COST_MICRO_USD = 10**15
MAX_THRESHOLDS = 7
MAX_DESCRIPTION_CHARS = 1024
POLICY_NAME = re.compile(r"[a-z0-9_.-]{1,64}")
LABEL_KEY = re.compile(r"[a-z0-9_.-]{1,64}")

# Dimension names in the daemon's order (its caps are sorted by it, as the wire's are).
DIMENSIONS = {
    "total_tokens": pb.DIMENSION_TOTAL_TOKENS,
    "input_tokens": pb.DIMENSION_INPUT_TOKENS,
    "output_tokens": pb.DIMENSION_OUTPUT_TOKENS,
    "cost_micro_usd": pb.DIMENSION_COST_MICRO_USD,
    "requests": pb.DIMENSION_REQUESTS,
    "concurrency": pb.DIMENSION_CONCURRENCY,
    "run_duration_ms": pb.DIMENSION_RUN_DURATION_MS,
    "wall_clock_ms": pb.DIMENSION_WALL_CLOCK_MS,
}
UNPRICED = {"deny": pb.UNPRICED_DENY, "allow": pb.UNPRICED_ALLOW}
SCOPES = {"local": pb.SCOPE_LOCAL, "global": pb.SCOPE_GLOBAL}
ON_UNAVAILABLE = {"deny": pb.ON_UNAVAILABLE_DENY, "allow_local": pb.ON_UNAVAILABLE_ALLOW_LOCAL}
# Dimensions a global policy cannot cap: measured on one host.
UNSHARED = {
    pb.DIMENSION_RUN_DURATION_MS: "run_duration_ms",
    pb.DIMENSION_WALL_CLOCK_MS: "wall_clock_ms",
}
# The daemon's bounds of durations (budgetd.core.policy).
MAX_DURATION_S = 10 * 366 * 86_400
MAX_SLIDING_S = 86_400
MAX_IDLE_TTL_S = 366 * 86_400
ENFORCEMENTS = {
    "hard": pb.ENFORCEMENT_HARD,
    "soft": pb.ENFORCEMENT_SOFT,
    "shadow": pb.ENFORCEMENT_SHADOW,
}
WINDOW_KINDS = ("lifetime", "calendar", "fixed", "sliding")
CALENDAR_UNITS = {
    "minute": pb.CALENDAR_UNIT_MINUTE,
    "hour": pb.CALENDAR_UNIT_HOUR,
    "day": pb.CALENDAR_UNIT_DAY,
    "week": pb.CALENDAR_UNIT_WEEK,
    "month": pb.CALENDAR_UNIT_MONTH,
}
SEVERITIES = {
    "warning": pb.SEVERITY_WARNING,
    "critical": pb.SEVERITY_CRITICAL,
    "final": pb.SEVERITY_FINAL,
}
_SEVERITY_NAMES = {name.upper() for name in SEVERITIES}
DEFAULT_THRESHOLDS = ((75, "warning"), (90, "critical"), (95, "final"))

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


class PolicyError(ValueError):
    """A policy table broke a rule: `field` names the key, `rule` says what was expected."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def parse(data: Any, where: str = "policy") -> pb.Policy:
    """One policy table (as TOML gives it) -> the message PutPolicy takes."""
    if not isinstance(data, Mapping):
        raise PolicyError(where, "must be a table")
    unknown = sorted(set(data) - _POLICY_KEYS)
    if unknown:
        raise PolicyError(f"{where}.{unknown[0]}", f"unknown key (known: {sorted(_POLICY_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or POLICY_NAME.fullmatch(name) is None:
        raise PolicyError(f"{where}.name", "required; must match [a-z0-9_.-]{1,64}")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise PolicyError(
            f"{where}.description", f"must be a string of at most {MAX_DESCRIPTION_CHARS} chars"
        )
    # The daemon's parser checks the keys in this order; so does this one.
    match = _match(data.get("match", {}), f"{where}.match")
    per = _per(data.get("per", []), f"{where}.per")
    caps = _caps(data.get("caps", {}), f"{where}.caps")
    window = _window(data.get("window", "lifetime"), f"{where}.window")
    if window.HasField("sliding") and any(d == pb.DIMENSION_WALL_CLOCK_MS for d, _ in caps):
        raise PolicyError(
            f"{where}.caps.wall_clock", "not allowed with a sliding window (it never starts)"
        )
    enforcement = ENFORCEMENTS[
        _choice(tuple(ENFORCEMENTS), data.get("enforcement", "hard"), f"{where}.enforcement")
    ]
    thresholds = _thresholds(data.get("thresholds"), f"{where}.thresholds")
    evictable = _bool(data.get("evictable", True), f"{where}.evictable")
    close_with_run = _bool(data.get("close_with_run", False), f"{where}.close_with_run")
    unpriced = UNPRICED[_choice(tuple(UNPRICED), data.get("unpriced", "deny"), f"{where}.unpriced")]
    scope = _choice(tuple(SCOPES), data.get("scope", "local"), f"{where}.scope")
    on_unavailable = None
    if scope == "global":
        on_unavailable = _global(data, caps, window, where)
        evictable = _bool(data.get("evictable", False), f"{where}.evictable")
    elif "on_unavailable" in data:
        raise PolicyError(f"{where}.on_unavailable", "only for scope = 'global'")
    missing = _missing(data.get("missing", {}), per, f"{where}.missing")
    idle_ttl = data.get("idle_ttl_s", data.get("idle_ttl"))
    idle_ttl_s = (
        0
        if idle_ttl is None or idle_ttl == 0
        else parse_duration_s(idle_ttl, f"{where}.idle_ttl", MAX_IDLE_TTL_S)
    )
    export_ledgers = _bool(data.get("export_ledgers", False), f"{where}.export_ledgers")
    message = pb.Policy(
        name=name,
        description=description,
        match=dict(match),
        per=per,
        caps=[pb.Cap(dimension=dimension, limit=limit) for dimension, limit in caps],
        window=window,
        enforcement=enforcement,
        thresholds=[pb.Threshold(percent=p, severity=SEVERITIES[s]) for p, s in thresholds],
        evictable=evictable,
        close_with_run=close_with_run,
        unpriced=unpriced,
        missing=dict(missing),
        export_ledgers=export_ledgers,
    )
    if idle_ttl_s:
        message.idle_ttl.seconds = idle_ttl_s
    if on_unavailable is not None:
        message.scope = pb.SCOPE_GLOBAL
        message.on_unavailable = ON_UNAVAILABLE[on_unavailable]
    return message


# The daemon's policy.GLOBAL_CONCURRENCY_RULE, word for word.
GLOBAL_CONCURRENCY_RULE = (
    "with scope = 'global' only under a lifetime window (slots outlive a window);"
    " cap concurrency in a global policy of its own"
)


def _global(
    data: Mapping[str, Any], caps: list[tuple[pb.Dimension, int]], window: pb.Window, where: str
) -> str:
    """The rules only a global policy has (the daemon's `_parse_global`); its on_unavailable."""
    for dimension, _ in caps:
        if dimension in UNSHARED:
            raise PolicyError(
                f"{where}.caps.{UNSHARED[dimension]}",
                "not allowed with scope = 'global' (it is measured on one host)",
            )
    if window.HasField("sliding"):
        raise PolicyError(
            f"{where}.window", "scope = 'global' needs a lifetime, calendar or fixed window"
        )
    lifetime = window.WhichOneof("kind") in (None, "lifetime")
    if not lifetime and any(d == pb.DIMENSION_CONCURRENCY for d, _ in caps):
        raise PolicyError(f"{where}.caps.concurrency", GLOBAL_CONCURRENCY_RULE)
    for key in ("evictable", "close_with_run"):
        if data.get(key) is True:
            raise PolicyError(f"{where}.{key}", "not allowed with scope = 'global'")
    if data.get("idle_ttl_s", data.get("idle_ttl")) not in (None, 0):
        raise PolicyError(f"{where}.idle_ttl", "not allowed with scope = 'global'")
    mode = data.get("on_unavailable", "deny")
    return _choice(tuple(ON_UNAVAILABLE), mode, f"{where}.on_unavailable")


def _missing(value: object, per: list[str], where: str) -> list[tuple[str, str]]:
    pairs = _match(value, where)
    for key, default in pairs:
        if key not in per:
            raise PolicyError(f"{where}.{key}", f"not a `per` key (per: {per})")
        if default == "*":
            raise PolicyError(f"{where}.{key}", "a default value, not '*'")
    return pairs


def parse_duration_s(value: object, where: str, maximum: int = MAX_DURATION_S) -> int:
    """Whole seconds from an int or a string such as "90s", "30m", "2h", "30d", "1w"."""
    if isinstance(value, bool):
        raise PolicyError(where, "must be a duration such as 90, '90s', '2h' or '30d'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        if len(m.group(1)) > 12:
            raise PolicyError(where, f"must be at most {maximum} s")
        seconds = int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise PolicyError(where, "must be a duration such as 90, '90s', '2h' or '30d'")
    if seconds <= 0:
        raise PolicyError(where, "must be a positive duration")
    if seconds > maximum:
        raise PolicyError(where, f"must be at most {maximum} s")
    return seconds


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(where, "must be true or false")
    return value


def _choice(choices: tuple[str, ...], value: object, where: str) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise PolicyError(where, f"must be one of {list(choices)}, got {value!r}")
    return value.lower()


def _match(value: object, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping):
        raise PolicyError(where, "must be a table of label = value ('*' = present)")
    if len(value) > MAX_LABELS:
        raise PolicyError(where, f"at most {MAX_LABELS} labels")
    pairs = []
    for key, wanted in value.items():
        _label_key(key, f"{where}.{key}")
        if (
            not isinstance(wanted, str)
            or not wanted
            or len(wanted.encode()) > MAX_LABEL_VALUE_BYTES
        ):
            raise PolicyError(
                f"{where}.{key}", f"must be a non-empty string of <= {MAX_LABEL_VALUE_BYTES} bytes"
            )
        pairs.append((key, wanted))
    return sorted(pairs)


def _per(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise PolicyError(where, "must be a list of label keys")
    if len(value) > MAX_LABELS:
        raise PolicyError(where, f"at most {MAX_LABELS} keys")
    for i, key in enumerate(value):
        _label_key(key, f"{where}[{i}]")
    if len(set(value)) != len(value):
        raise PolicyError(where, "keys must be distinct")
    return list(value)


def _label_key(key: object, where: str) -> None:
    if not isinstance(key, str) or len(key) > MAX_LABEL_KEY_CHARS or not LABEL_KEY.fullmatch(key):
        raise PolicyError(where, "label keys match [a-z0-9_.-]{1,64}")


def _caps(value: object, where: str) -> list[tuple[pb.Dimension, int]]:
    if not isinstance(value, Mapping):
        raise PolicyError(where, f"must be a table of dimension = limit ({sorted(DIMENSIONS)})")
    caps: dict[pb.Dimension, int] = {}
    names = {dimension: name for name, dimension in DIMENSIONS.items()}
    for name, raw in value.items():
        dimension, limit = _cap(name, raw, f"{where}.{name}")
        if dimension in caps:
            raise PolicyError(f"{where}.{name}", f"{names[dimension]} is capped twice")
        caps[dimension] = limit
    return sorted(caps.items())


def parse_cap(name: object, raw: object, where: str) -> tuple[pb.Dimension, int]:
    """One `dimension = limit` of a caps table (also `budgetctl limits KEY --NAME VALUE`)."""
    return _cap(name, raw, where)


def _cap(name: object, raw: object, where: str) -> tuple[pb.Dimension, int]:
    # Friendly spellings: cost_usd = "12.50" and run_duration = "2h" convert exactly.
    if name == "cost_usd":
        return pb.DIMENSION_COST_MICRO_USD, usd_to_micro(raw, where)
    if name == "run_duration":
        return pb.DIMENSION_RUN_DURATION_MS, parse_duration_s(raw, where) * 1000
    if name == "wall_clock":
        return pb.DIMENSION_WALL_CLOCK_MS, parse_duration_s(raw, where) * 1000
    dimension = DIMENSIONS.get(name) if isinstance(name, str) else None
    if dimension is None:
        known = sorted([*DIMENSIONS, "cost_usd", "run_duration", "wall_clock"])
        raise PolicyError(where, f"unknown dimension (known: {known})")
    maximum = MAX_COST_MICRO_USD if dimension == pb.DIMENSION_COST_MICRO_USD else MAX_TOKENS
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= maximum:
        raise PolicyError(where, f"must be an integer in 0..{maximum}")
    return dimension, raw


def usd_to_micro(value: object, where: str) -> int:
    """Exact conversion of a USD amount (str, int or Decimal; never float) to micro-USD."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise PolicyError(where, 'must be a USD amount as a string such as "12.50"')
    try:
        micro = Decimal(value) * 1_000_000
    except InvalidOperation:
        raise PolicyError(where, f"not a number: {value!r}") from None
    if not micro.is_finite() or micro < 0 or micro != micro.to_integral_value():
        raise PolicyError(where, "must be a non-negative amount with at most 6 decimals")
    return int(micro)


def _window(value: object, where: str) -> pb.Window:
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, Mapping):
        raise PolicyError(where, "must be a window kind or a table with 'kind'")
    unknown = sorted(set(value) - _WINDOW_KEYS)
    if unknown:
        raise PolicyError(f"{where}.{unknown[0]}", f"unknown key (known: {sorted(_WINDOW_KEYS)})")
    kind = _choice(WINDOW_KINDS, value.get("kind", "lifetime"), f"{where}.kind")
    window = pb.Window()
    if kind == "lifetime":
        window.lifetime.SetInParent()
        return window
    if kind == "calendar":
        unit = _choice(tuple(CALENDAR_UNITS), value.get("unit", "day"), f"{where}.unit")
        zone = value.get("time_zone", "UTC")
        try:
            if not isinstance(zone, str):
                raise ValueError(zone)
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(f"{where}.time_zone", f"unknown IANA time zone {zone!r}") from None
        window.calendar.unit = CALENDAR_UNITS[unit]
        window.calendar.time_zone = zone
        return window
    raw = value.get("duration_s", value.get("duration"))
    if raw is None:
        raise PolicyError(f"{where}.duration", f"required for a {kind} window")
    maximum = MAX_SLIDING_S if kind == "sliding" else MAX_DURATION_S
    seconds = parse_duration_s(raw, f"{where}.duration", maximum)
    span = window.fixed.duration if kind == "fixed" else window.sliding.duration
    span.seconds = seconds
    return window


def _thresholds(value: object, where: str) -> list[tuple[int, str]]:
    if value is None:
        return list(DEFAULT_THRESHOLDS)
    if not isinstance(value, list | tuple):
        raise PolicyError(where, "must be a list of {percent, severity}")
    if len(value) > MAX_THRESHOLDS:
        raise PolicyError(where, f"at most {MAX_THRESHOLDS} thresholds")
    thresholds = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise PolicyError(f"{where}[{i}]", "must be a table {percent, severity}")
        percent = item.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 1000:
            raise PolicyError(f"{where}[{i}].percent", "must be an integer in 1..1000")
        severity = item.get("severity", "warning")
        # Compared in upper case, as the daemon does (upper() folds letters lower() keeps).
        if not isinstance(severity, str) or severity.upper() not in _SEVERITY_NAMES:
            raise PolicyError(f"{where}[{i}].severity", f"must be one of {list(SEVERITIES)}")
        thresholds.append((percent, severity.upper().lower()))
    percents = [percent for percent, _ in thresholds]
    if len(set(percents)) != len(percents):
        raise PolicyError(where, "percents must be distinct")
    return sorted(thresholds, key=lambda t: t[0])
