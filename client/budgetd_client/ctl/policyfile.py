"""Policy files: read them for `policies put`, write them for `policies get`.

A file holds one policy (its keys at the top level) or several (`[[policies]]`, as in
the daemon's config file). It is parsed here with the config file's grammar
(`policy_grammar`, held to the daemon's parser by a test), so a typo is reported as
`file:key: reason` before anything is sent, with the same rules and words as the config
file. What `policies get` writes reads back to the same policy, so get -> edit -> put is
safe.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from budgetd_client.ctl import formats as fmt
from budgetd_client.ctl import policy_grammar
from budgetd_client.ctl.errors import CtlError, Exit
from budgetd_client.ctl.policy_grammar import PolicyError
from budgetd_client.v1 import budget_pb2 as pb

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"


def load(path: Path) -> list[pb.Policy]:
    """Every policy of the file, validated; `CtlError` names the file, key and reason."""
    document = _read(path)
    try:
        items = _policy_tables(document)
        policies = [_parse(data, where) for where, data in items]
        _check_distinct(policies, [where for where, _ in items])
    except PolicyError as error:
        raise CtlError(Exit.INVALID, f"{path}:{error.field}: {error.rule}") from None
    return policies


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CtlError(Exit.USAGE, f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise CtlError(Exit.INVALID, f"{path}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CtlError(Exit.INVALID, f"{path}: invalid TOML: {error}") from None


def _policy_tables(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, table) for each policy: `policies[i]` in an array, the top level else."""
    if "policies" not in document:
        return [("", document)]
    others = sorted(set(document) - {"policies"})
    if others:
        raise PolicyError(
            others[0], "unknown key next to [[policies]] (a file holds one policy or an array)"
        )
    items = document["policies"]
    if not isinstance(items, list) or not items:
        raise PolicyError("policies", "must be a non-empty array of tables ([[policies]])")
    return [(f"policies[{i}]", item) for i, item in enumerate(items)]


def _parse(data: Any, where: str) -> pb.Policy:
    try:
        return policy_grammar.parse(data, where)
    except PolicyError as error:
        # A top-level policy has no prefix: `.caps.x` reads better as `caps.x`.
        raise PolicyError(error.field.removeprefix("."), error.rule) from None


def _check_distinct(policies: Sequence[pb.Policy], wheres: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for policy, where in zip(policies, wheres, strict=True):
        if policy.name in seen:
            raise PolicyError(
                f"{where}.name", f"{policy.name!r} is already the name of {seen[policy.name]}"
            )
        seen[policy.name] = where


# --- writing -------------------------------------------------------------------------


def dump(policies: Sequence[pb.Policy]) -> str:
    """A `[[policies]]` file that `load` (and the daemon's config) reads back."""
    return "\n".join(_policy_toml(policy) for policy in policies)


def _policy_toml(policy: pb.Policy) -> str:
    lines = ["[[policies]]", f"name = {_string(policy.name)}"]
    if policy.description:
        lines.append(f"description = {_string(policy.description)}")
    lines += [
        f"match = {_inline(dict(policy.match))}",
        f"per = [{', '.join(_string(key) for key in policy.per)}]",
        f"caps = {{ {', '.join(_cap(cap) for cap in policy.caps)} }}"
        if policy.caps
        else "caps = {}  # a meter",
        f"window = {_window(policy.window)}",
        f"enforcement = {_string(fmt.enforcement(policy.enforcement))}",
        "thresholds = [" + ", ".join(_threshold(t) for t in policy.thresholds) + "]",
        f"evictable = {_bool(policy.evictable)}",
        f"close_with_run = {_bool(policy.close_with_run)}",
    ]
    if policy.export_ledgers:
        lines.append("export_ledgers = true")
    return "\n".join(lines) + "\n"


def _cap(cap: pb.Cap) -> str:
    if cap.dimension == pb.DIMENSION_COST_MICRO_USD:
        return f"cost_usd = {_string(fmt.usd_plain(cap.limit))}"
    if cap.dimension == pb.DIMENSION_RUN_DURATION_MS:
        if cap.limit % 1000:
            return f"run_duration_ms = {cap.limit:_}"
        return f"run_duration = {_string(fmt.seconds_spec(cap.limit // 1000))}"
    name = fmt.enum_name(pb.Dimension, cap.dimension, "DIMENSION_")
    return f"{_key(name)} = {cap.limit:_}"


def _window(window: pb.Window) -> str:
    kind = window.WhichOneof("kind") or "lifetime"
    if kind == "calendar":
        unit = fmt.enum_name(pb.CalendarUnit, window.calendar.unit, "CALENDAR_UNIT_")
        zone = window.calendar.time_zone or "UTC"
        return _inline({"kind": kind, "unit": unit, "time_zone": zone})
    if kind in ("fixed", "sliding"):
        span = window.fixed.duration if kind == "fixed" else window.sliding.duration
        return _inline({"kind": kind, "duration": fmt.seconds_spec(span.seconds)})
    return _inline({"kind": "lifetime"})


def _threshold(threshold: pb.Threshold) -> str:
    severity = _string(fmt.severity(threshold.severity))
    return f"{{ percent = {threshold.percent}, severity = {severity} }}"


def _inline(table: dict[str, str]) -> str:
    if not table:
        return "{}"
    return "{ " + ", ".join(f"{_key(k)} = {_string(v)}" for k, v in table.items()) + " }"


def _key(key: str) -> str:
    # Label keys may hold dots, which TOML would read as nested tables: quote them.
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(value: str) -> str:
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _bool(value: bool) -> str:
    return "true" if value else "false"
