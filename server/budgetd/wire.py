"""Hot-path answers as bytes: protobuf's wire format written directly, the parts that
repeat serialized once.

Built as messages in Python, a Consume's four ledger briefs cost as much as the core's
whole work for the call, and a Check's six full ledger statuses ~200 us. Here each brief
and each status is serialized once and reused while the core hands back the same value
(a ledger's brief tuple lives until its state changes; a status object while the ledger
is unchanged, see the core's StatusMemo), and a response is the concatenation of its
fields. The rarer parts (blockers, crossings, overruns, timestamps) are built as
messages by `convert` and serialized. The wire format allows this: a parser takes fields
in any order; tests/unit/test_wire.py checks that every answer parses to the message
`convert` would build.

Handlers return these bytes; `budgetd.auth.gate` registers every method with a
serializer that passes bytes through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from budgetd import convert
from budgetd.core import events as ev
from budgetd.core.results import (
    CheckResult,
    CommitResult,
    ConsumeResult,
    Decision,
    LedgerBrief,
    LedgerStatus,
    ReserveResult,
)
from budgetd.v1 import budget_pb2 as pb

# Serialized briefs, statuses and costs kept, each cache (the ledgers in use fill them
# within a few calls after a clear).
CACHE_ENTRIES = 8192
_U64 = (1 << 64) - 1
_SMALL = tuple(bytes((n,)) for n in range(0x80))

T = TypeVar("T")


def varint(value: int) -> bytes:
    """`value` as a base-128 varint (negative: its 64-bit two's complement, as int64)."""
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def delimited(data: bytes) -> bytes:
    """A length-delimited value: its length, then the bytes."""
    return varint(len(data)) + data


def _tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def _scalar(field: int, value: int) -> bytes:
    """A varint field; nothing for 0 (proto3 leaves defaults out)."""
    return _tag(field, 0) + varint(value) if value else b""


class _Serialized(Generic[T]):
    """Serializations of one message field (its tag, then the length-delimited message)
    by the object they encode. Keyed by identity, the object kept alive beside its
    bytes so that its id is not reused while cached; bounded by CACHE_ENTRIES (cleared
    when full)."""

    def __init__(
        self, build: Callable[[T], bytes], field: int, fresh: Callable[[T], bool] | None = None
    ) -> None:
        self._build = build
        self._tag = _tag(field, 2)
        self._by_id: dict[int, tuple[T, bytes]] = {}
        self._fresh = fresh  # values made anew for each answer: never cached

    def __call__(self, value: T) -> bytes:
        found = self._by_id.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        data = self._tag + delimited(self._build(value))
        if self._fresh is not None and self._fresh(value):
            return data  # (caching it would only push the reusable entries out)
        if len(self._by_id) >= CACHE_ENTRIES:
            self._by_id.clear()
        self._by_id[id(value)] = (value, data)
        return data


def _brief(brief: LedgerBrief) -> bytes:
    key, state = brief
    return pb.LedgerBrief(key=key, state=convert.STATE[state]).SerializeToString()


def _status(status: LedgerStatus) -> bytes:
    return convert.ledger_status(status).SerializeToString()


# Briefs as the `ledgers` field of Consume and Commit answers (1) and of Reserve's (4);
# statuses as Check's (2).
briefs = _Serialized[LedgerBrief](_brief, 1)
reserve_briefs = _Serialized[LedgerBrief](_brief, 4)
# A global ledger's status is made anew each time (its share moves apart from its
# counters: Engine._status does not memoize it).
check_statuses = _Serialized[LedgerStatus](_status, 2, lambda status: status.share is not None)


class _Costs:
    """The cost fields of an answer (`cost_known` = true, then the cost), by cost: the
    same few costs recur call after call. Bounded by CACHE_ENTRIES (cleared when full)."""

    def __init__(self, known_field: int) -> None:
        self._known = _tag(known_field, 0) + b"\x01"
        self._cost_field = known_field + 1
        self._by_cost: dict[int, bytes] = {}

    def __call__(self, cost: int) -> bytes:
        found = self._by_cost.get(cost)
        if found is None:
            found = self._known + _scalar(self._cost_field, convert.i64(cost))
            if len(self._by_cost) >= CACHE_ENTRIES:
                self._by_cost.clear()
            self._by_cost[cost] = found
        return found


_consume_cost = _Costs(3)
_commit_cost = _Costs(4)
_check_cost = _Costs(5)


def _messages(field: int, messages: Sequence[Any]) -> list[bytes]:
    tag = _tag(field, 2)
    return [tag + delimited(m.SerializeToString()) for m in messages]


def _blockers(field: int, blockers: Sequence[Any]) -> list[bytes]:
    return _messages(field, [convert.blocker(b) for b in blockers]) if blockers else []


def _crossings(field: int, crossings: Sequence[Any]) -> list[bytes]:
    return _messages(field, [convert.crossing(c) for c in crossings]) if crossings else []


def _flag(field: int, value: bool) -> bytes:
    return _tag(field, 0) + b"\x01" if value else b""


_CONSUME_REPLAYED = _flag(5, True)


def consume(result: ConsumeResult) -> bytes:
    """ConsumeResponse: ledgers 1, crossings 2, cost_known 3, cost 4, replayed 5. (The
    hot path's answer: one cached piece per brief and per cost, a flag only when set.)"""
    parts = [briefs(brief) for brief in result.ledgers]
    if result.crossings:
        parts += _crossings(2, result.crossings)
    cost = result.cost_micro_usd
    if cost is not None:
        parts.append(_consume_cost(cost))
    if result.replayed:
        parts.append(_CONSUME_REPLAYED)
    return b"".join(parts)


def commit(result: CommitResult) -> bytes:
    """CommitResponse: ledgers 1, crossings 2, overruns 3, cost_known 4, cost 5,
    replayed 6."""
    parts = [briefs(brief) for brief in result.ledgers]
    parts += _crossings(2, result.crossings)
    if result.overruns:
        overruns = [
            pb.Overrun(
                dimension=convert.DIMENSION[o.dimension], reserved=o.reserved, actual=o.actual
            )
            for o in result.overruns
        ]
        parts += _messages(3, overruns)
    if result.cost_micro_usd is not None:
        parts.append(_commit_cost(result.cost_micro_usd))
    parts.append(_flag(6, result.replayed))
    return b"".join(parts)


def check(result: CheckResult) -> bytes:
    """CheckResponse: decision 1, ledgers 2, blockers 3, warnings 4, cost_known 5,
    estimated cost 6."""
    parts = [_scalar(1, convert.DECISION[result.decision])]
    parts += [check_statuses(status) for status in result.ledgers]
    parts += _blockers(3, result.blockers)
    parts += _blockers(4, result.warnings)
    if result.cost_micro_usd is not None:
        parts.append(_check_cost(result.cost_micro_usd))
    return b"".join(parts)


def reserve(result: ReserveResult) -> bytes:
    """ReserveResponse: decision 1, reservation_id 2, expires_at 3, ledgers 4, blockers
    5, warnings 6, cost_known 7, reserved cost 8 (when granted), replayed 9."""
    parts = [_scalar(1, convert.DECISION[result.decision])]
    if result.reservation_id:
        parts.append(_tag(2, 2) + delimited(result.reservation_id.encode()))
    if result.expires_at is not None:
        stamp = convert.timestamp(result.expires_at).SerializeToString()
        parts.append(_tag(3, 2) + delimited(stamp))
    parts += [reserve_briefs(brief) for brief in result.ledgers]
    parts += _blockers(5, result.blockers)
    parts += _blockers(6, result.warnings)
    cost = result.cost_micro_usd
    if cost is not None:
        granted = result.decision is not Decision.DENY
        parts += [_tag(7, 0) + b"\x01", _scalar(8, convert.i64(cost) if granted else 0)]
    parts.append(_flag(9, result.replayed))
    return b"".join(parts)


def release(result: Any) -> bytes:
    """ReleaseResponse: released 1, replayed 2."""
    return _flag(1, result.released) + _flag(2, result.replayed)


# --- events --------------------------------------------------------------------------

# Events whose encoding is kept for the subscribers still behind (the most recent ones;
# a subscriber further back gets its events encoded again).
ENCODED_EVENTS = 4096
_EVENT_TAG = _tag(1, 2)


class EncodedEvents:
    """Each event's SubscribeResponse serialized once for every subscriber, with the
    labels a subscriber's selector is held against. Keyed by seq: a seq names one event
    for the life of the process."""

    def __init__(self, size: int = ENCODED_EVENTS) -> None:
        self._size = size
        self._by_seq: dict[int, tuple[Mapping[str, str], bytes]] = {}

    def of(self, seq: int, event: ev.Event) -> tuple[Mapping[str, str], bytes]:
        found = self._by_seq.get(seq)
        if found is None:
            message = convert.event_message(seq, event).SerializeToString()
            found = (convert.event_labels(event), _EVENT_TAG + delimited(message))
            if len(self._by_seq) >= self._size:
                self._by_seq.clear()
            self._by_seq[seq] = found
        return found


# --- batches -------------------------------------------------------------------------

# BatchResult's oneof fields, by operation kind; `error` is 6.
RESULT_FIELD = {"check": 1, "reserve": 2, "commit": 3, "release": 4, "consume": 5}
_RESULT_TAGS = {kind: _tag(field, 2) for kind, field in RESULT_FIELD.items()}
_ERROR_TAG = _tag(6, 2)
_RESULTS_TAG = _tag(1, 2)


def stream_error(code: int, message: str) -> bytes:
    """StreamError: code 1, message 2."""
    text = message.encode("utf-8", "surrogatepass")
    return _scalar(1, code) + (_tag(2, 2) + delimited(text) if text else b"")


def batch_result(kind: str, answer: bytes) -> bytes:
    """One BatchResult: the operation's response in the field of its kind."""
    return _RESULT_TAGS[kind] + delimited(answer)


def batch_error(code: int, message: str) -> bytes:
    return _ERROR_TAG + delimited(stream_error(code, message))


def batch_response(results: Sequence[bytes]) -> bytes:
    """BatchResponse: results 1, each a serialized BatchResult."""
    return b"".join([_RESULTS_TAG + delimited(result) for result in results])


def stream_answer(sequence: int, response: bytes) -> bytes:
    """ConsumeStreamResponse or BatchStreamResponse (the same fields): sequence 1,
    response 2."""
    return _scalar(1, sequence) + _tag(2, 2) + delimited(response)


def stream_error_answer(sequence: int, code: int, message: str) -> bytes:
    """ConsumeStreamResponse or BatchStreamResponse: sequence 1, error 3."""
    return _scalar(1, sequence) + _tag(3, 2) + delimited(stream_error(code, message))


def passthrough(serialize: Callable[..., Any] | None) -> Callable[[Any], bytes]:
    """A response serializer that sends bytes as they are (a handler's answer from
    this module) and serializes messages (with `serialize`; None: they are bytes)."""

    def serialized(response: Any) -> bytes:
        if isinstance(response, bytes) or serialize is None:
            return response  # type: ignore[no-any-return]
        return serialize(response)  # type: ignore[no-any-return]

    return serialized
