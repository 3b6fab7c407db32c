"""TOML documents for the file fuzzers: hostile values, written as valid TOML text.

Goal: reach the parsers' checks behind the TOML syntax. Values are the ones that break
settings (numbers at and past every bound, TOML's inf and nan, exponents, negative
durations, datetimes where numbers belong, tables where strings belong, NUL and
overlong text); `document` writes any mapping of them as `key = value` lines with
inline tables and arrays (always valid TOML, so the parser sees the structure).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.strategies import int_values, text


class Raw(str):
    """A TOML literal written as is: a float, a datetime, inf, nan."""


FLOATS = ("1.5", "0.0", "-0.0", "1e400", "-1e400", "inf", "-inf", "nan", "12.50", "1e-7")
DATETIMES = ("1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "1979-05-27T07:32:00")
STRINGS = (
    "", "x", "90s", "30m", "2h", "30d", "1w", "-5s", "0s", "1e9h", "8h", "12.50", "1e-7",
    "0.0000001", "inf", "nan", "true", "uvloop", "json", "journal", "hard", "calendar",
    "sliding", "fixed", "lifetime", "day", "UTC", "Mars/Olympus", "127.0.0.1:0",
    "0.0.0.0:1", "[::1]:99999", "/nonexistent/x", ".", "~", "a\x00b", "budgetd.toml",
)  # fmt: skip


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        int_values(-(2**63), 2**63 - 1),
        st.integers(),  # past int64 too: TOML's own bound is the parser's to enforce
        st.booleans(),
        st.sampled_from(FLOATS).map(Raw),
        st.sampled_from(DATETIMES).map(Raw),
        st.sampled_from(STRINGS),
        text(),
    )


def values(keys: Sequence[str] = ("a", "b")) -> st.SearchStrategy[Any]:
    """Any TOML value: scalars, arrays and tables of them (a few levels deep)."""
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.sampled_from(keys) | text(8), inner, max_size=4),
        ),
        max_leaves=8,
    )


def _string(value: str) -> str:
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def value(item: Any) -> str:
    if isinstance(item, Raw):
        return str(item)
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        return _string(item)
    if isinstance(item, Mapping):
        return "{" + ", ".join(f"{_string(k)} = {value(v)}" for k, v in item.items()) + "}"
    if isinstance(item, Sequence):
        return "[" + ", ".join(value(v) for v in item) + "]"
    raise AssertionError(f"no TOML for {item!r}")


def document(data: Mapping[str, Any]) -> str:
    return "".join(f"{_string(key)} = {value(item)}\n" for key, item in data.items())


def parses(text_: str) -> bool:
    try:
        tomllib.loads(text_)
    except (tomllib.TOMLDecodeError, RecursionError):
        return False
    return True


def shown(data: object) -> str:
    return json.dumps(data, default=str)[:2000]
