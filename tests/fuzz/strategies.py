"""Hypothesis strategies built from protobuf descriptors: hostile messages and bytes.

Goal: every request message of every RPC, generated from its descriptor alone (a new
field is fuzzed without touching this file), with the values that break servers:
integers at and past every bound of their type, negative and huge durations, NUL and
non-BMP text, overlong strings, many map entries, enum numbers nobody defined, empty
and oversized fields. Field names the contract gives a meaning (labels, ids, models)
draw from a small vocabulary too, so that part of the calls get past validation and
reach the engine. `wire_mutation` then breaks the serialized message: truncations, bit
flips, lone surrogates and overlong UTF-8 in string fields (which no protobuf library
lets one set), unknown fields, wrong wire types, random bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
UINT64 = (0, 2**64 - 1)
UINT32 = (0, 2**32 - 1)
_RANGES = {
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
}
# The contract's bounds and their neighbours (tokens, cost, latency, ttl, percent, ...).
_EDGES = (
    0, 1, -1, 2, 7, 8, 16, 17, 100, 101, 999, 1000, 1001, 3600, 3601, 86_400, 86_401,
    366 * 86_400 + 1, 315_576_000_000, 315_576_000_001, 86_400_000, 86_400_000_001,
    10**12, 10**12 + 1, 10**15, 10**15 + 1, 2**31 - 1, 2**31, 2**32, 2**53 + 1,
    999_999_999, 1_000_000_000, -999_999_999, -1_000_000_000,
)  # fmt: skip
SMALL = st.integers(0, 2000)
PLAUSIBLE = st.integers(1, 1000)
LABEL_KEYS = ("tenant", "user", "agent", "thread", "model", "provider", "team")
LABEL_VALUES = ("acme", "globex", "u1", "u2", "a1", "a2", "t1", "t2", "gpt-4o", "*", "x")
MODELS = (
    "gpt-4o", "gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-latest", "openai/GPT-4o",
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0", "o1-pro", "unknown-model", "",
)  # fmt: skip
POLICY_NAMES = ("per-thread", "daily", "per-agent", "runs", "agent-usage", "fz-1", "fz-2")
TIME_ZONES = ("UTC", "Europe/Paris", "America/New_York", "Mars/Olympus", "", "../../etc")
REQUEST_IDS = tuple(f"fz-{i}" for i in range(24))  # reused: some retries, some clashes
# Fields a plausible request always sets (an empty id is the commonest way to be invalid).
ALWAYS_SET = frozenset({"request_id", "reservation_id", "key", "name", "model"})
# Text nobody validates for: NUL, controls, BOM, RTL marks, astral planes, combining marks.
ODD = ("", " ", "\x00", "a\x00b", "\t\n", "\ufeff", "\u202e", "\U0001f4a9", "e\u0301", "Ω")


def int_values(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (*_EDGES, low, high, low + 1, high - 1) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), SMALL, st.integers(low, high))


def text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Valid UTF-8 text (what a protobuf string may hold): hostile and overlong too."""
    chars = st.characters(codec="utf-8")
    long = st.builds(
        lambda c, n: c * n,
        st.sampled_from(("a", "é", "\U0001f4a9", "\x00")),
        st.sampled_from((64, 65, 128, 129, 256, 257, 1025, 70_000)),
    )
    return st.one_of(st.sampled_from(ODD), st.text(chars, max_size=max_size), long)


def _named_text(name: str) -> st.SearchStrategy[str] | None:
    """A vocabulary for the fields whose meaning the contract defines."""
    if name in ("request_id", "reservation_id", "run_id", "page_token"):
        fresh = st.integers(0, 10**6).map(lambda n: f"fz-{n}")
        return st.one_of(st.sampled_from(REQUEST_IDS), fresh)
    if name in ("model", "provider"):
        return st.sampled_from(MODELS)
    if name in ("name", "policy"):
        return st.sampled_from(POLICY_NAMES)
    if name == "time_zone":
        return st.sampled_from(TIME_ZONES)
    if name == "key":
        return st.sampled_from(("daily", "per-agent{agent=a1}", "per-thread{thread=t1}", "x{"))
    return None


def _scalar(field: FieldDescriptor, name: str, hostile: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _RANGES:
        return int_values(*_RANGES[kind]) if hostile else PLAUSIBLE
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        defined = st.sampled_from([v.number for v in field.enum_type.values])
        return st.one_of(defined, int_values(*INT32)) if hostile else defined
    if kind == FieldDescriptor.TYPE_STRING:
        named = _named_text(name)
        if named is None:
            return text() if hostile else st.sampled_from(LABEL_VALUES)
        return st.one_of(named, text()) if hostile else named
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    raise AssertionError(f"no strategy for field type {kind} ({field.full_name})")


def _map_entries(field: FieldDescriptor, hostile: bool) -> st.SearchStrategy[dict[str, str]]:
    entry = field.message_type
    assert entry is not None
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    assert key_field.type == value_field.type == FieldDescriptor.TYPE_STRING, field.full_name
    keys = st.one_of(st.sampled_from(LABEL_KEYS), text(70))
    values = st.one_of(st.sampled_from(LABEL_VALUES), text(300))
    few = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=4)
    if not hostile:
        return few
    many = st.dictionaries(keys, values, min_size=15, max_size=40)
    return st.one_of(few, st.dictionaries(keys, values, max_size=6), many)


def messages(descriptor: Descriptor, hostile: bool, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`, each field set or not. Hostile: every value may be one
    that breaks a rule; else plausible values only (small numbers, the vocabulary), so
    that calls get past validation and reach the engine."""
    cls = GetMessageClass(descriptor)
    setters = [_setter(field, hostile, depth) for field in descriptor.fields]

    def build(chosen: tuple[Callable[[Message], None] | None, ...]) -> Message:
        message = cls()
        for set_field in chosen:
            if set_field is not None:
                set_field(message)
        return message

    chosen = [
        setter if not hostile and field.name in ALWAYS_SET else st.one_of(st.none(), setter)
        for field, setter in zip(descriptor.fields, setters, strict=True)
    ]
    return st.tuples(*chosen).map(build)


def _setter(
    field: FieldDescriptor, hostile: bool, depth: int
) -> st.SearchStrategy[Callable[[Message], None]]:
    name = field.name
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _map_entries(field, hostile).map(lambda entries: _put_map(name, entries))
    if field.message_type is not None:
        if depth >= 4:  # deep enough: the contract nests at most three levels
            return st.just(lambda message: None)
        inner = messages(field.message_type, hostile, depth + 1)
        if field.is_repeated:
            most = 10 if hostile else 3
            return st.lists(inner, max_size=most).map(lambda items: _extend(name, items))
        return inner.map(lambda value: _copy(name, value))
    scalar = _scalar(field, name, hostile)
    if field.is_repeated:
        most = 12 if hostile else 3
        return st.lists(scalar, max_size=most).map(lambda items: _extend(name, items))
    return scalar.map(lambda value: _assign(name, value))


def _put_map(name: str, entries: dict[str, str]) -> Callable[[Message], None]:
    return lambda message: getattr(message, name).update(entries)


def _extend(name: str, items: list[Any]) -> Callable[[Message], None]:
    return lambda message: getattr(message, name).extend(items)


def _copy(name: str, value: Message) -> Callable[[Message], None]:
    return lambda message: getattr(message, name).CopyFrom(value)


def _assign(name: str, value: Any) -> Callable[[Message], None]:
    return lambda message: setattr(message, name, value)


# --- the wire ----------------------------------------------------------------------

# Byte sequences no valid UTF-8 holds: a lone surrogate (CESU), overlong NUL and "/",
# a stray continuation byte, a truncated sequence, bytes never used, past U+10FFFF.
BAD_UTF8 = (
    b"\xed\xa0\x80", b"a\xed\xbf\xbfb", b"\xc0\x80", b"\xe0\x80\xaf", b"\x80", b"\xe2\x82",
    b"\xff\xfe", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
)  # fmt: skip


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _string_fields(descriptor: Descriptor) -> list[tuple[int, bool]]:
    """(field number, is a map) of every string field and map of a message."""
    found = []
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            found.append((field.number, False))
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            found.append((field.number, True))
    return found


def wire_mutation(descriptor: Descriptor, data: bytes) -> st.SearchStrategy[bytes]:
    """`data` (a serialized `descriptor` message) broken in one of many ways."""
    size = len(data)
    at = st.integers(0, max(size - 1, 0))
    options: list[st.SearchStrategy[bytes]] = [
        st.binary(max_size=64),
        st.just(b"\xff" * 16),
        at.map(lambda i: data[:i]),
        st.tuples(at, st.integers(0, 7)).map(lambda p: _flip(data, *p)),
        st.tuples(at, st.binary(min_size=1, max_size=8)).map(lambda p: data[: p[0]] + p[1]),
        st.integers(1, 2**29 - 1).map(lambda n: data + varint(n << 3) + varint(2**64 - 1)),
        st.sampled_from((b"\x08", b"\x0a\x7f", b"\x0a\xff\xff\xff\xff\x0f", b"\x07")).map(
            lambda tail: data + tail
        ),
        st.integers(1, 15).map(lambda n: data + varint(n << 3 | 5) + b"\x00\x00\x00\x00"),
        st.just(data + length_delimited(1, b"x" * 70_000)),
    ]
    strings = _string_fields(descriptor)
    if strings:
        options.append(st.tuples(st.sampled_from(strings), st.sampled_from(BAD_UTF8)).map(
            lambda p: data + _bad_string(*p[0], p[1])
        ))  # fmt: skip
    return st.one_of(options)


def _flip(data: bytes, index: int, bit: int) -> bytes:
    if not data:
        return b"\x80"
    flipped = bytearray(data)
    flipped[index] ^= 1 << bit
    return bytes(flipped)


def _bad_string(number: int, is_map: bool, payload: bytes) -> bytes:
    if is_map:  # an entry whose key (field 1) is not UTF-8, with a plain value
        return length_delimited(number, length_delimited(1, payload) + length_delimited(2, b"v"))
    return length_delimited(number, payload)
