"""A global ledger on the wire: its share in LedgerStatus, a lease Blocker's reason,
and a global policy's scope in the Policy message, both ways.

Goal: what the core knows of a share reaches GetLedger and Check answers field for
field, and a policy's scope and on_unavailable survive PutPolicy's conversion.
"""

from __future__ import annotations

from budgetd import convert, wire
from budgetd.core import Dimension, Engine, Policy, Usage
from budgetd.core.dimensions import VECTOR_SIZE
from budgetd.v1 import budget_pb2 as pb

T0 = 1_800_000_000.0
ORG = {
    "name": "org",
    "scope": "global",
    "on_unavailable": "allow_local",
    "caps": {"total_tokens": 10_000},
    "window": {"kind": "calendar", "unit": "day"},
}
LABELS = {"agent": "a"}


def _engine_with_a_share() -> Engine:
    engine = Engine([Policy.from_mapping(ORG)], global_enabled=True)
    engine.consume(LABELS, Usage(1_000, 0), "c1", T0)
    used = [0] * VECTOR_SIZE
    used[Dimension.TOTAL_TOKENS] = 6_000
    settled = [0] * VECTOR_SIZE
    settled[Dimension.TOTAL_TOKENS] = 1_000
    start = engine._ledgers["org"].window_start
    engine.share_synced(
        "org", start, [[Dimension.TOTAL_TOKENS, 1_500]], used, settled, 1, 2, T0 + 30, T0 + 1
    )
    return engine


def test_get_ledger_shows_the_share_of_a_global_ledger() -> None:
    status = convert.ledger_status(_engine_with_a_share().get_ledger("org", T0 + 1))
    assert status.dimensions[0].used == 6_000  # the global total as far as it knows
    assert status.HasField("share")
    share = status.share
    assert share.sidecars == 2 and share.reachable
    assert share.lease_until.seconds == int(T0 + 30)
    (dimension,) = share.dimensions
    assert dimension.dimension == pb.DIMENSION_TOTAL_TOKENS
    assert (dimension.global_used, dimension.lease_remaining) == (6_000, 500)
    assert (dimension.bound, dimension.unsettled) == (2 * 100, 0)


def test_a_lease_blocker_has_its_own_reason_on_the_wire() -> None:
    result = _engine_with_a_share().check(LABELS, Usage(600, 0), T0 + 1)
    answer = pb.CheckResponse.FromString(wire.check(result))
    assert answer.decision == pb.DECISION_DENY
    assert answer.blockers[0].reason == pb.BLOCK_REASON_LEASE
    assert answer.blockers[0].limit == 10_000
    assert answer.ledgers[0].share.dimensions[0].lease_remaining == 500


def test_a_global_ledgers_status_is_serialized_fresh_and_never_cached() -> None:
    engine = _engine_with_a_share()
    cached = len(wire.check_statuses._by_id)
    for _ in range(3):  # a new status object each Check: caching it would only churn
        answer = pb.CheckResponse.FromString(wire.check(engine.check(LABELS, Usage(1, 0), T0 + 1)))
        assert answer.ledgers[0].HasField("share")
    assert len(wire.check_statuses._by_id) == cached


def test_a_local_ledger_has_no_share_and_a_local_policy_no_scope() -> None:
    engine = Engine([Policy.from_mapping({"name": "l", "caps": {"requests": 5}})])
    engine.consume(LABELS, Usage(1, 0), "c1", T0)
    assert not convert.ledger_status(engine.get_ledger("l", T0)).HasField("share")
    message = convert.policy_message(engine.policy("l"))
    assert message.scope == pb.SCOPE_UNSPECIFIED


def test_scope_and_on_unavailable_survive_the_policy_message_both_ways() -> None:
    policy = Policy.from_mapping(ORG)
    message = convert.policy_message(policy)
    assert message.scope == pb.SCOPE_GLOBAL
    assert message.on_unavailable == pb.ON_UNAVAILABLE_ALLOW_LOCAL
    assert Policy.from_mapping(convert.policy(message)) == policy
