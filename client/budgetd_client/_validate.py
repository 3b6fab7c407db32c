"""Misuse the SDK catches before building a protobuf message.

protobuf would raise a bare TypeError or ValueError (or a confusing message) for a label
that is not a str or an integer it cannot encode; the SDK raises `InvalidRequest` naming
the label or the field instead. The contract's finer rules (label key syntax, token and
cost ranges, which a daemon may configure) stay with the daemon, which names them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from budgetd_client.errors import InvalidRequest
from budgetd_client.models import Usage

MAX_INT64 = 2**63 - 1
_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "reasoning_tokens",
    "latency_ms",
    "latency_us",
)


def labels(value: Any, field: str = "labels") -> dict[str, str]:
    """A copy of `value` as a dict of str to str, or `InvalidRequest` naming the label."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{field}: must be a mapping of str to str, not {_kind(value)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidRequest(f"{field}[{key!r}]: label keys must be str, not {_kind(key)}")
        if not isinstance(item, str):
            raise InvalidRequest(f"{field}[{key!r}]: label values must be str, not {_kind(item)}")
    return dict(value)


def usage(value: Any, field: str) -> Usage:
    """`value` if it is a `Usage` protobuf can encode, else `InvalidRequest` naming the
    field (integers: 0..2**63-1; the daemon enforces its own, smaller, ranges)."""
    if not isinstance(value, Usage):
        raise InvalidRequest(f"{field}: must be a budgetd_client.Usage, not {_kind(value)}")
    for name in _COUNTS:
        _count(getattr(value, name), f"{field}.{name}")
    if value.cost_micro_usd is not None:
        _count(value.cost_micro_usd, f"{field}.cost_micro_usd")
    for name in ("model", "provider"):
        if not isinstance(getattr(value, name), str):
            raise InvalidRequest(f"{field}.{name}: must be str, not {_kind(getattr(value, name))}")
    return value


def identifier(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: must be str, not {_kind(value)}")
    return value


def _count(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{field}: must be an int, not {_kind(value)}")
    if not 0 <= value <= MAX_INT64:
        raise InvalidRequest(f"{field}: must be in 0..2**63-1, got {value}")


def _kind(value: Any) -> str:
    return type(value).__name__
