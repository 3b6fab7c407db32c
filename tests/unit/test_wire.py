"""The hot path's hand-written answers (budgetd.wire) are the messages `convert` builds.

Goal: every answer the daemon sends as bytes parses to exactly the message the builders
in `convert` make for the same result — over results an engine really produces (allowed,
warned, denied, replayed, unpriced, with crossings and overruns), with cached briefs and
statuses reused and refreshed — and the framing of batches and streams parses as the
contract's messages.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetd import convert, wire
from budgetd.core import Engine, Policy, Usage
from budgetd.v1 import budget_pb2 as pb

T0 = 1_800_000_000.5
POLICIES = (
    Policy.from_mapping(
        {
            "name": "per-user",
            "per": ["user"],
            "caps": {"total_tokens": 1000, "cost_micro_usd": 50_000},
            "thresholds": [
                {"percent": 50, "severity": "warning"},
                {"percent": 90, "severity": "critical"},
            ],
        }
    ),
    Policy.from_mapping({"name": "soft", "caps": {"total_tokens": 1500}, "enforcement": "soft"}),
    Policy.from_mapping({"name": "meter", "per": ["model"]}),
)


def _usage(tokens: int, model: str = "gpt-4o") -> Usage:
    return Usage(input_tokens=tokens, output_tokens=tokens // 2, model=model)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["consume", "reserve", "commit", "check", "release", "retry"]),
            st.integers(0, 900),
            st.sampled_from(["u1", "u2"]),
            st.sampled_from(["gpt-4o", "no-such-model"]),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_every_answer_parses_to_the_message_convert_builds(steps: list[Any]) -> None:
    engine = Engine(POLICIES)
    held: list[str] = []
    last: tuple[str, Any, Any] | None = None
    for n, (wanted, tokens, user, model) in enumerate(steps):
        op = wanted
        labels, usage, now = {"user": user}, _usage(tokens, model), T0 + n
        if op == "retry" and last is not None:
            op, args = last[0], last[1]
            result, _ = getattr(engine, op)(*args)
        elif op == "consume" or (op == "commit" and not held) or op == "retry":
            args = (labels, usage, f"c{n}", now)
            result, _ = engine.consume(*args)
            op = "consume"
        elif op == "reserve":
            args = (labels, usage, 60, f"r{n}", now)
            result, _ = engine.reserve(*args)
            if result.reservation_id:
                held.append(result.reservation_id)
        elif op == "commit":
            args = (held.pop(), _usage(tokens * 2, model), f"m{n}", now)
            result, _ = engine.commit(*args)
        elif op == "release" and held:
            args = (held.pop(), f"l{n}", now)
            result, _ = engine.release(*args)
        else:
            args = ()
            result = engine.check(labels, usage, now)
            op = "check"
        _same(op, result)
        last = (op, args, result) if args else last


def _same(op: str, result: Any) -> None:
    built: dict[str, Any] = {
        "consume": (pb.ConsumeResponse, convert.consume_response, wire.consume),
        "reserve": (pb.ReserveResponse, convert.reserve_response, wire.reserve),
        "commit": (pb.CommitResponse, convert.commit_response, wire.commit),
        "check": (pb.CheckResponse, convert.check_response, wire.check),
        "release": (
            pb.ReleaseResponse,
            lambda r: pb.ReleaseResponse(released=r.released, replayed=r.replayed),
            wire.release,
        ),
    }
    message, build, encode = built[op]
    parsed = message.FromString(encode(result))
    assert parsed == build(result), op
    # The canonical serialization of what was parsed is what protobuf itself would send.
    assert parsed.SerializeToString(deterministic=True) == build(result).SerializeToString(
        deterministic=True
    )


def test_a_cached_status_is_reused_and_a_changed_one_is_encoded_again() -> None:
    engine = Engine(POLICIES)
    engine.consume({"user": "u"}, _usage(10), "a", T0)
    first = engine.check({"user": "u"}, _usage(1), T0 + 1)
    again = engine.check({"user": "u"}, _usage(1), T0 + 2)
    assert first.ledgers[0] is again.ledgers[0]  # the core's memo: the same object
    assert wire.check_statuses(first.ledgers[0]) is wire.check_statuses(
        again.ledgers[0]
    )  # one encoding
    engine.consume({"user": "u"}, _usage(10), "b", T0 + 3)
    changed = engine.check({"user": "u"}, _usage(1), T0 + 4)
    parsed = pb.CheckResponse.FromString(wire.check(changed))
    assert parsed.ledgers[0].totals.input_tokens == 20


def test_the_caches_are_bounded() -> None:
    engine = Engine(POLICIES)
    for i in range(wire.CACHE_ENTRIES + 10):
        result, _ = engine.consume({"user": f"u{i}"}, _usage(1), f"c{i}", T0)
        wire.consume(result)
    assert len(wire.briefs._by_id) <= wire.CACHE_ENTRIES
    costs = wire._Costs(3)
    for cost in range(wire.CACHE_ENTRIES + 10):
        answer = pb.ConsumeResponse.FromString(costs(cost))
        assert answer.cost_known and answer.cost_micro_usd == cost
    assert len(costs._by_cost) <= wire.CACHE_ENTRIES


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)])
def test_varints_are_protobufs(value: int) -> None:
    ours = b"\x10" + wire.varint(value) if value else b""  # Overrun.reserved is field 2
    assert ours == pb.Overrun(reserved=value).SerializeToString()


def test_batch_and_stream_framing_parse_as_the_contracts_messages() -> None:
    engine = Engine(POLICIES)
    consumed, _ = engine.consume({"user": "u"}, _usage(10), "a", T0)
    checked = engine.check({"user": "u"}, _usage(1), T0)
    results = [
        wire.batch_result("consume", wire.consume(consumed)),
        wire.batch_error(3, "operations[1].consume.usage.input_tokens: must be >= 0"),
        wire.batch_result("check", wire.check(checked)),
        wire.batch_error(5, ""),
    ]
    response = pb.BatchResponse.FromString(wire.batch_response(results))
    assert [r.WhichOneof("result") for r in response.results] == [
        "consume",
        "error",
        "check",
        "error",
    ]
    assert response.results[0].consume == convert.consume_response(consumed)
    assert response.results[1].error == pb.StreamError(
        code=3, message="operations[1].consume.usage.input_tokens: must be >= 0"
    )
    assert response.results[2].check == convert.check_response(checked)
    answer = pb.BatchStreamResponse.FromString(wire.stream_answer(7, wire.batch_response(results)))
    assert answer.sequence == 7 and answer.response == response
    refused = pb.ConsumeStreamResponse.FromString(wire.stream_error_answer(2**40, 8, "limit"))
    assert refused.sequence == 2**40 and refused.error == pb.StreamError(code=8, message="limit")
    single = pb.ConsumeStreamResponse.FromString(wire.stream_answer(0, wire.consume(consumed)))
    assert single.sequence == 0 and single.response == convert.consume_response(consumed)


def test_a_message_is_still_serialized_by_the_passthrough() -> None:
    serialize = wire.passthrough(pb.StreamError.SerializeToString)
    assert serialize(b"\x08\x03") == b"\x08\x03"
    assert serialize(pb.StreamError(code=3)) == b"\x08\x03"


def test_an_event_is_encoded_once_for_every_subscriber() -> None:
    engine = Engine(POLICIES)
    _, events = engine.consume({"user": "u"}, _usage(600), "a", T0)
    encoded = wire.EncodedEvents(size=2)
    for seq, event in enumerate(events, start=1):
        labels, data = encoded.of(seq, event)
        assert encoded.of(seq, event)[1] is data  # the second subscriber: the same bytes
        assert labels == convert.event_labels(event)
        parsed = pb.SubscribeResponse.FromString(data)
        assert parsed == pb.SubscribeResponse(event=convert.event_message(seq, event))
    assert len(events) > 2 and len(encoded._by_seq) <= 2  # bounded
