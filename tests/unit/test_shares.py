"""Global policies in the core: their rules, and a sidecar's share of a global ledger.

Goal: a global policy is refused where it cannot work (no Redis configured, a sliding
window, a per-host dimension, anything that closes a ledger on one sidecar); a global
ledger grants only what its share allows (a Blocker marked `lease` when the cap has
room the lease has not), no more once the lease lapsed, and by the cap alone while
Redis is out of reach under `allow_local`; what Redis reports of the others' usage is
folded into the counters (thresholds cross on it); a settle gives back at once and is
kept until confirmed; a window roll keeps what the old window owes; and every share
survives a snapshot and a journal replay exactly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from budgetd.core import Dimension, Engine, InvalidArgument, Policy, Usage
from budgetd.core.dimensions import VECTOR_SIZE
from budgetd.core.events import ThresholdCrossed
from budgetd.core.mutations import decode, encode
from budgetd.core.policy import OnUnavailable, Scope
from budgetd.core.results import Decision
from budgetd.core.shares import MAX_LEGACY_STARTS, SHARED_SLOTS, Shares, unsettled
from budgetd.core.state import FORMAT
from budgetd.core.usage import usage_plain

T0 = 1_800_000_000.0
# The form of states an earlier release wrote, whose journals follow its rules.
EARLIER = "budgetd.state/2"
TOKENS = int(Dimension.TOTAL_TOKENS)
SLOTS = int(Dimension.CONCURRENCY)
ORG = {
    "name": "org",
    "scope": "global",
    "caps": {"total_tokens": 10_000},
    "window": {"kind": "calendar", "unit": "day"},
}
LABELS = {"agent": "a", "thread": "t"}


def _engine(**changes: Any) -> Engine:
    return Engine([Policy.from_mapping({**ORG, **changes})], global_enabled=True)


def _vector(**slots: int) -> list[int]:
    vector = [0] * VECTOR_SIZE
    for name, value in slots.items():
        vector[int(Dimension[name.upper()])] = value
    return vector


def _sync(
    engine: Engine,
    now: float,
    tokens: int = 0,
    slots: int = 0,
    used: int = 0,
    settled: int = 0,
    seq: int = 0,
    lease_until: float | None = None,
) -> bool:
    ledger = engine._ledgers["org"]
    found, _ = engine.share_synced(
        "org",
        ledger.window_start,
        [[TOKENS, tokens], [SLOTS, slots]],
        _vector(total_tokens=used),
        _vector(total_tokens=settled),
        seq,
        3,
        now + 30 if lease_until is None else lease_until,
        now,
    )
    return found


def _reserve(engine: Engine, tokens: int, rid: str, now: float) -> Any:
    return engine.reserve(LABELS, Usage(tokens, 0), 60.0, rid, now)[0]


# --- the policy --------------------------------------------------------------------


def test_a_global_policy_parses_and_keeps_its_scope() -> None:
    policy = Policy.from_mapping({**ORG, "on_unavailable": "allow_local"})
    assert policy.is_global and policy.scope is Scope.GLOBAL
    assert policy.on_unavailable is OnUnavailable.ALLOW_LOCAL
    assert not policy.evictable  # a global ledger never closes on one sidecar alone
    again = Policy.from_mapping(policy.to_mapping())
    assert again == policy
    local = Policy.from_mapping({"name": "l", "caps": {"requests": 1}})
    assert "scope" not in local.to_mapping()  # local policies' plain data is unchanged


@pytest.mark.parametrize(
    ("changes", "where", "reason"),
    [
        ({"window": {"kind": "sliding", "duration": "1h"}}, "policy.window", "lifetime"),
        ({"caps": {"run_duration": "1h"}}, "policy.caps.run_duration_ms", "one host"),
        ({"caps": {"wall_clock": "1h"}}, "policy.caps.wall_clock_ms", "one host"),
        (
            {"caps": {"concurrency": 3}, "window": {"kind": "calendar", "unit": "day"}},
            "policy.caps.concurrency",
            "lifetime window",
        ),
        ({"evictable": True}, "policy.evictable", "global"),
        ({"close_with_run": True}, "policy.close_with_run", "global"),
        ({"idle_ttl": "1h"}, "policy.idle_ttl", "global"),
        ({"on_unavailable": "maybe"}, "policy.on_unavailable", "allow_local"),
        ({"scope": "galaxy"}, "policy.scope", "global"),
    ],
)
def test_what_a_global_policy_cannot_have_is_refused_by_name(
    changes: dict[str, Any], where: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        Policy.from_mapping({**ORG, **changes})
    assert refused.value.field == where
    assert reason in refused.value.rule


def test_on_unavailable_belongs_to_global_policies_only() -> None:
    with pytest.raises(InvalidArgument) as refused:
        Policy.from_mapping({"name": "l", "on_unavailable": "deny"})
    assert refused.value.field == "policy.on_unavailable"


def test_a_sidecar_without_redis_refuses_global_policies() -> None:
    with pytest.raises(InvalidArgument) as refused:
        Engine([Policy.from_mapping(ORG)])
    assert refused.value.field == "policy 'org'.scope"
    assert "redis_url" in refused.value.rule


def test_fixed_global_windows_begin_at_the_same_instant_everywhere() -> None:
    engine = _engine(window={"kind": "fixed", "duration": "1h"})
    _reserve(engine, 1, "r1", T0 + 1234.5)
    ledger = engine._ledgers["org"]
    assert ledger.window_start % 3600 == 0  # from the epoch, not from the first use


# --- what a share grants ---------------------------------------------------------


def test_nothing_is_granted_before_a_lease_and_the_blocker_says_lease() -> None:
    engine = _engine()
    denied = _reserve(engine, 10, "r1", T0)
    assert denied.decision is Decision.DENY
    (blocker,) = denied.blockers
    assert blocker.lease and blocker.dimension is Dimension.TOTAL_TOKENS
    assert blocker.limit == 10_000  # the cap: the lease is what is short


def test_a_lease_grants_up_to_its_allowance_then_the_cap_alone_is_not_enough() -> None:
    engine = _engine()
    _reserve(engine, 1, "r0", T0)  # creates the ledger (denied)
    assert _sync(engine, T0, tokens=500)
    assert _reserve(engine, 499, "r1", T0 + 1).decision is not Decision.DENY
    denied = _reserve(engine, 2, "r2", T0 + 1)  # 499 held + 2 > 500 leased
    assert denied.decision is Decision.DENY and denied.blockers[0].lease
    check = engine.check(LABELS, Usage(1, 0), T0 + 1)
    assert check.decision is Decision.ALLOW  # 499 + 1 fits the lease


def test_over_the_cap_the_blocker_is_the_cap_not_the_lease() -> None:
    engine = _engine()
    _reserve(engine, 1, "r0", T0)
    _sync(engine, T0, tokens=10_000)
    denied = _reserve(engine, 10_001, "r1", T0)
    assert denied.decision is Decision.DENY
    assert not denied.blockers[0].lease and denied.blockers[0].shortfall == 1


def test_a_lapsed_lease_grants_nothing_more() -> None:
    engine = _engine()
    _reserve(engine, 1, "r0", T0)
    _sync(engine, T0, tokens=500, lease_until=T0 + 30)
    assert engine.check(LABELS, Usage(10, 0), T0 + 29).decision is Decision.ALLOW
    lapsed = engine.check(LABELS, Usage(10, 0), T0 + 30)
    assert lapsed.decision is Decision.DENY and lapsed.blockers[0].lease


@pytest.mark.parametrize("mode", ["deny", "allow_local"])
def test_out_of_reach_deny_serves_the_lease_and_allow_local_the_cap(mode: str) -> None:
    engine = _engine(on_unavailable=mode)
    _reserve(engine, 1, "r0", T0)
    _sync(engine, T0, tokens=500)
    found, _ = engine.shares_unreachable(T0 + 1)
    assert found
    within = engine.check(LABELS, Usage(400, 0), T0 + 1).decision
    beyond = engine.check(LABELS, Usage(5_000, 0), T0 + 1).decision
    assert within is Decision.ALLOW
    assert beyond is (Decision.DENY if mode == "deny" else Decision.ALLOW)
    assert engine.check(LABELS, Usage(10_001, 0), T0 + 1).decision is Decision.DENY


def test_concurrency_slots_are_leased_like_tokens() -> None:
    engine = _engine(caps={"total_tokens": 10_000, "concurrency": 3}, window="lifetime")
    engine.open_run(LABELS, "run0", 60.0, "o0", T0)  # creates the ledger (denied)
    _sync(engine, T0, tokens=100, slots=2)
    opened = [engine.open_run(LABELS, f"run{i}", 60.0, f"o{i}", T0)[0] for i in (1, 2, 3)]
    assert [o.decision for o in opened][:2] == [Decision.ALLOW, Decision.ALLOW]
    assert opened[2].decision is Decision.DENY and opened[2].blockers[0].lease


# --- what Redis reports --------------------------------------------------------------


def test_the_others_usage_is_folded_into_the_counters_and_crosses_thresholds() -> None:
    engine = _engine()
    engine.consume(LABELS, Usage(1_000, 0), "c1", T0)  # own usage: 1,000
    ledger = engine._ledgers["org"]
    found, events = engine.share_synced(
        "org",
        ledger.window_start,
        [[TOKENS, 2_000]],
        _vector(total_tokens=8_500),  # everyone's settled usage, own 1,000 included
        _vector(total_tokens=1_000),
        1,
        3,
        T0 + 30,
        T0 + 1,
    )
    assert found
    assert ledger.count(TOKENS) == 8_500  # 7,500 of the others + own 1,000
    crossed = [e for e in events if isinstance(e, ThresholdCrossed)]
    assert [c.percent for c in crossed] == [75]
    view = engine.get_ledger("org", T0 + 1).share
    assert view is not None
    assert view.global_used[TOKENS] == 8_500
    assert view.lease_remaining[TOKENS] == 1_000  # 2,000 allowed, 1,000 used
    assert view.bound[TOKENS] == 3 * 100  # 3 sidecars x 1 % of the cap
    assert view.unsettled[TOKENS] == 0


def test_a_settle_gives_back_at_once_and_is_kept_until_confirmed() -> None:
    engine = _engine()
    engine.consume(LABELS, Usage(300, 0), "c1", T0)
    ledger = engine._ledgers["org"]
    _sync(engine, T0, tokens=1_000)
    start = ledger.window_start
    sent = _vector(total_tokens=300, requests=1)
    engine.share_settling("org", start, 1, sent, [[TOKENS, 600]], T0 + 1)
    share = engine.shares.of(ledger)
    assert share is not None and share.settling is not None
    assert share.allowance[TOKENS] == 400  # given back before Redis hears of it
    assert engine.check(LABELS, Usage(101, 0), T0 + 1).decision is Decision.DENY
    with pytest.raises(InvalidArgument):  # a sequence is used once
        engine.share_settling("org", start, 0, sent, [], T0 + 1)
    engine.share_synced("org", start, [[TOKENS, 400]], sent, sent, 1, 3, T0 + 31, T0 + 2)
    assert share.settling is None and share.seq == 1
    assert ledger.count(TOKENS) == 300  # nobody else used any


def test_a_rolled_window_keeps_what_it_owes_and_starts_a_share_of_its_own() -> None:
    engine = _engine()
    engine.consume(LABELS, Usage(300, 0), "c1", T0)
    _sync(engine, T0, tokens=1_000)
    old_start = engine._ledgers["org"].window_start
    engine.consume(LABELS, Usage(50, 0), "c2", T0 + 86_400)  # the next day
    ledger = engine._ledgers["org"]
    assert ledger.window_start > old_start
    closing = engine.shares.closing[("org", old_start)]
    assert closing.counts[TOKENS] == 300
    fresh = engine.shares.of(ledger)
    assert fresh is not None and fresh.allowance == {} and fresh.lease_until == 0.0
    # Refused while the ended window still owes its 300 tokens: they would never settle.
    assert not engine.share_settled_up("org", old_start, T0 + 86_401)[0]
    sent = [n if i in SHARED_SLOTS else 0 for i, n in enumerate(closing.counts)]
    engine.share_settling("org", old_start, 1, sent, [[TOKENS, 1_000]], T0 + 86_401)
    assert not engine.share_settled_up("org", old_start, T0 + 86_401)[0]  # in flight
    engine.share_synced("org", old_start, [[TOKENS, 0]], sent, sent, 1, 1, 0.0, T0 + 86_402)
    assert engine.share_settled_up("org", old_start, T0 + 86_402)[0]
    assert ("org", old_start) not in engine.shares.closing


def test_reset_and_own_caps_are_refused_for_a_global_ledger() -> None:
    engine = _engine()
    engine.consume(LABELS, Usage(1, 0), "c1", T0)
    with pytest.raises(InvalidArgument) as refused:
        engine.reset_ledger("org", "x1", T0)
    assert refused.value.field == "key" and "global" in refused.value.rule
    with pytest.raises(InvalidArgument):
        engine.set_ledger_limits("org", [(Dimension.TOTAL_TOKENS, 5)], T0)


# --- snapshots and the journal -------------------------------------------------------


def test_shares_survive_a_snapshot_and_a_journal_replay() -> None:
    start = Engine([Policy.from_mapping(ORG)], global_enabled=True)
    state = json.dumps(start.export_state())
    journal: list[str] = []
    start.recorder = lambda mutation: journal.append(json.dumps(encode(mutation)))
    start.consume(LABELS, Usage(300, 0), "c1", T0)
    _sync(start, T0, tokens=1_000, slots=1, used=900, settled=0)
    window = start._ledgers["org"].window_start
    start.share_settling("org", window, 1, _vector(total_tokens=300), [[TOKENS, 10]], T0 + 1)
    start.shares_unreachable(T0 + 2)
    start.consume(LABELS, Usage(5, 0), "c2", T0 + 86_400)  # rolls: one share closing
    restored = Engine.from_state(json.loads(json.dumps(start.export_state())), global_enabled=True)
    replayed = Engine.from_state(json.loads(state), global_enabled=True)
    for line in journal:
        replayed.apply(decode(json.loads(line)))
    expected = start.export_state()
    assert "shares" in expected
    assert restored.export_state() == expected
    assert replayed.export_state() == expected


def test_windows_that_ended_owing_redis_are_bounded_and_drops_are_counted() -> None:
    engine = _engine(per=["thread"], window={"kind": "calendar", "unit": "minute"})
    engine.shares = Shares(engine._ledgers, max_closing=2)
    threads = [{"agent": "a", "thread": f"t{i}"} for i in range(3)]
    for i, labels in enumerate(threads):
        engine.consume(labels, Usage(10, 0), f"c{i}", T0)
    for i, labels in enumerate(threads):  # the next minute: each window ended owing 10
        engine.consume(labels, Usage(1, 0), f"d{i}", T0 + 60)
    assert len(engine.shares.closing) == 2 and engine.shares.dropped == 1
    kept = sorted(key for key, _ in engine.shares.closing)
    assert kept == ["org{thread=t1}", "org{thread=t2}"]  # the oldest went first


def test_a_denial_only_the_lease_caused_is_judged_again_under_the_same_request_id() -> None:
    engine = _engine()
    assert _reserve(engine, 10, "r1", T0).blockers[0].lease  # not leased yet: denied
    assert _sync(engine, T0, tokens=100)
    again = _reserve(engine, 10, "r1", T0 + 1)  # the same request, once leased
    assert again.decision is Decision.ALLOW and again.reservation_id
    over = _reserve(engine, 20_000, "r2", T0 + 1)  # the cap itself: remembered
    replayed = _reserve(engine, 20_000, "r2", T0 + 2)
    assert replayed.replayed and replayed.blockers == over.blockers


def test_open_global_opens_only_missing_global_ledgers_and_counts_nothing() -> None:
    engine = Engine(
        [Policy.from_mapping(ORG), Policy.from_mapping({"name": "local", "per": ["agent"]})],
        global_enabled=True,
    )
    opened, _ = engine.open_global(LABELS, T0)
    assert opened == 1 and "org" in engine.shares.live
    assert engine.ledger_count == 1  # the local policy's ledger waits for real use
    assert engine.open_global(LABELS, T0 + 1)[0] == 0
    assert engine._ledgers["org"].count(TOKENS) == 0


# --- one share per window ------------------------------------------------------------


def test_a_ledger_reopened_in_its_window_takes_its_share_back_and_continues() -> None:
    engine = _engine()
    engine.consume(LABELS, Usage(300, 0), "c1", T0)
    _sync(engine, T0, tokens=1_000, used=1_300, settled=300, seq=1)  # others: 1,000
    share = engine.shares.live["org"]
    engine.consume(LABELS, Usage(200, 0), "c2", T0 + 1)  # owed to Redis at the close
    engine.delete_policy("org", T0 + 2)
    assert ("org", share.window_start) in engine.shares.closing
    engine.put_policy(Policy.from_mapping(ORG), T0 + 3)
    engine.consume(LABELS, Usage(100, 0), "c3", T0 + 4)
    ledger = engine._ledgers["org"]
    assert engine.shares.live["org"] is share and not engine.shares.closing
    assert ledger.count(Dimension.TOTAL_TOKENS) == 1_600  # 1,000 + 300 + 200 + 100
    window = ledger.window_start
    owed = _vector(total_tokens=300)  # 200 + 100, never negative
    engine.share_settling("org", window, 2, owed, [], T0 + 5)
    assert share.settling is not None and share.settling.used == owed


def test_a_global_lifetime_window_starts_at_the_epoch_in_every_ledger() -> None:
    engine = _engine(window="lifetime")
    engine.consume(LABELS, Usage(1, 0), "c1", T0)
    assert engine._ledgers["org"].window_start == 0.0  # Redis's window index: 0
    engine.delete_policy("org", T0 + 1)
    engine.put_policy(Policy.from_mapping({**ORG, "window": "lifetime"}), T0 + 2)
    engine.consume(LABELS, Usage(1, 0), "c2", T0 + 3)
    assert engine._ledgers["org"].window_start == 0.0


@pytest.mark.parametrize("scope", ["local", "global"])
def test_a_change_of_scope_closes_the_ledgers_and_the_next_use_opens_them_anew(
    scope: str,
) -> None:
    other = "global" if scope == "local" else "local"
    engine = _engine(scope=scope)
    engine.consume(LABELS, Usage(5, 0), "c1", T0)
    result, _ = engine.put_policy(Policy.from_mapping({**ORG, "scope": other}), T0 + 1)
    assert result.closed_ledgers == 1
    engine.consume(LABELS, Usage(5, 0), "c2", T0 + 2)
    ledger = engine._ledgers["org"]
    assert ledger.policy.is_global is (other == "global")
    assert ("org" in engine.shares.live) is (other == "global")


def test_a_share_opened_while_redis_is_out_of_reach_starts_out_of_reach() -> None:
    engine = _engine(per=["thread"], on_unavailable="allow_local")
    changed, _ = engine.shares_unreachable(T0)
    assert changed and not engine.shares_unreachable(T0)[0]  # said once
    engine.consume(LABELS, Usage(1, 0), "c1", T0 + 1)  # a new ledger, a new share
    (share,) = engine.shares.live.values()
    assert not share.reachable
    assert engine.check(LABELS, Usage(9_000, 0), T0 + 1).decision is Decision.ALLOW
    assert engine.check(LABELS, Usage(10_000, 0), T0 + 1).decision is Decision.DENY


def test_a_share_taken_back_while_redis_is_out_of_reach_stays_out_of_reach() -> None:
    engine = _engine(on_unavailable="allow_local")
    engine.consume(LABELS, Usage(300, 0), "c1", T0)
    _sync(engine, T0, tokens=1_000)
    engine.delete_policy("org", T0 + 1)  # its share closes, still owing 300
    assert engine.shares_unreachable(T0 + 2)[0]
    (closing,) = engine.shares.closing.values()
    assert not closing.share.reachable  # closing shares are told too
    engine.put_policy(Policy.from_mapping({**ORG, "on_unavailable": "allow_local"}), T0 + 3)
    engine.consume(LABELS, Usage(1, 0), "c2", T0 + 4)  # takes the closing share back
    share = engine.shares.live["org"]
    assert share is closing.share and not share.reachable
    # Judged by allow_local (the cap alone), not by a lease Redis may have given away.
    assert engine.check(LABELS, Usage(9_000, 0), T0 + 4).decision is Decision.ALLOW


def test_a_closing_share_that_owes_usage_is_never_settled_up() -> None:
    engine = _engine()
    engine.consume(LABELS, Usage(300, 0), "c1", T0)
    ledger = engine._ledgers["org"]
    window = ledger.window_start
    sent = [n if i in SHARED_SLOTS else 0 for i, n in enumerate(ledger.counts())]
    engine.share_settling("org", window, 1, sent, [], T0 + 1)
    engine.share_synced("org", window, [], sent, sent, 1, 1, 0.0, T0 + 1)
    engine.delete_policy("org", T0 + 2)  # closes owing nothing: it could be settled up
    engine.put_policy(Policy.from_mapping(ORG), T0 + 3)
    engine.open_global(LABELS, T0 + 3)  # takes the closing share back
    assert engine.shares.live["org"] is not None and not engine.shares.closing
    _sync(engine, T0 + 3, tokens=1_300, used=300, settled=300, seq=1)
    engine.consume(LABELS, Usage(50, 0), "c2", T0 + 4)  # used, and closed again
    engine.delete_policy("org", T0 + 5)
    assert not engine.share_settled_up("org", window, T0 + 6)[0]  # 50 still owed
    assert engine.shares.closing[("org", window)].counts[TOKENS] == 350


def _old_lifetime_state(created: float) -> dict[str, Any]:
    """A state as written before a global lifetime window started at 0: the ledger's
    start and its share's are its creation, and an older closing share of the same
    window sits beside it (a ledger closed and opened again)."""
    engine = _engine(window="lifetime")
    engine.consume(LABELS, Usage(300, 0), "c1", created)
    _sync(engine, created, tokens=1_000)
    data: dict[str, Any] = json.loads(json.dumps(engine.export_state()))
    (ledger,) = data["ledgers"]
    ledger["anchor"] = ledger["window_start"] = created
    live = data["shares"]["live"][0][1]
    live[0] = created
    older = list(live)
    older[0] = created - 100
    data["shares"]["closing"] = [["org", older, ledger["used"], None]]
    data["format"] = EARLIER
    return data


def test_a_state_and_journal_written_before_lifetime_windows_began_at_0_are_read() -> None:
    created = T0
    engine = Engine.from_state(_old_lifetime_state(created), global_enabled=True)
    ledger = engine._ledgers["org"]
    assert ledger.window_start == 0.0 and ledger.anchor == 0.0
    share = engine.shares.of(ledger)
    assert share is not None and share.window_start == 0.0
    # One share per Redis window: the older's own usage joins the newer's counters.
    assert not engine.shares.closing and engine.shares.dropped == 0
    assert ledger.count(Dimension.TOTAL_TOKENS) == 600
    # Records of that journal name the window by its old start; `share_unreachable`
    # was one share's.
    old_records = [
        {
            "op": "share_synced",
            "now": created + 1,
            "args": {
                "key": "org",
                "window_start": created,
                "allowance": [[TOKENS, 2_000]],
                "global_used": _vector(total_tokens=300),
                "settled": [0] * VECTOR_SIZE,
                "seq": 0,
                "sidecars": 2,
                "lease_until": created + 31,
            },
        },
        {
            "op": "share_unreachable",
            "now": created + 2,
            "args": {"key": "org", "window_start": created},
        },
    ]
    found = [engine.apply(decode(record))[0] for record in old_records]
    assert found == [True, True]
    assert share.allowance[TOKENS] == 2_000 and share.sidecars == 2
    assert not share.reachable
    assert share.absorbed[TOKENS] == 300  # Redis had 300 this sidecar had not settled
    again = Engine.from_state(json.loads(json.dumps(engine.export_state())), global_enabled=True)
    assert again.export_state() == engine.export_state()  # written anew: start 0 alone


def _synced_args(used: int, settled: int, seq: int) -> dict[str, Any]:
    """A `share_synced` record's arguments but the share's name: one answer of Redis."""
    return {
        "allowance": [[TOKENS, 0]],
        "global_used": _vector(total_tokens=used),
        "settled": _vector(total_tokens=settled),
        "seq": seq,
        "sidecars": 1,
        "lease_until": 0.0,
    }


def _settling_args(seq: int, used: int) -> dict[str, Any]:
    return {"seq": seq, "used": _vector(total_tokens=used), "give_back": []}


def _share_record(op: str, start: float, now: float, args: dict[str, Any]) -> dict[str, Any]:
    return {"op": op, "now": now, "args": {"key": "org", "window_start": start, **args}}


def _old_synced(start: float, now: float, used: int, settled: int, seq: int) -> dict[str, Any]:
    return _share_record("share_synced", start, now, _synced_args(used, settled, seq))


def _old_settling(start: float, now: float, seq: int, used: int) -> dict[str, Any]:
    return _share_record("share_settling", start, now, _settling_args(seq, used))


def _old_ledger_of_300(created: float) -> Engine:
    """An earlier release's state: a lifetime ledger created at `created`, 300 used."""
    engine = _engine(window="lifetime")
    engine.consume(LABELS, Usage(300, 0), "c1", created)
    data: dict[str, Any] = json.loads(json.dumps(engine.export_state()))
    data["ledgers"][0]["anchor"] = data["ledgers"][0]["window_start"] = created
    data["shares"]["live"][0][1][0] = created
    data["format"] = EARLIER
    return Engine.from_state(data, global_enabled=True)


def _lifetime_policy() -> dict[str, Any]:
    return {"op": "put_policy", "now": 0.0, "args": {"policy": {**ORG, "window": "lifetime"}}}


@pytest.mark.parametrize("order", ["settled_up_first", "reopened_first"])
def test_an_earlier_releases_journal_of_a_lifetime_ledger_reopened_counts_once(
    order: str,
) -> None:
    t1, t2 = T0, T0 + 100
    engine = _old_ledger_of_300(t1)
    delete = {"op": "delete_policy", "now": t1 + 1, "args": {"name": "org"}}
    put = {**_lifetime_policy(), "now": t1 + 5}
    use = {
        "op": "consume",
        "now": t2,
        "args": {"labels": LABELS, "usage": usage_plain(Usage(5, 0)), "request_id": "c2"},
    }
    settle = [
        _old_settling(t1, t1 + 2, 1, 300),
        _old_synced(t1, t1 + 3, used=300, settled=300, seq=1),
    ]
    settled_up = {
        "op": "share_settled_up",
        "now": t1 + 4,
        "args": {"key": "org", "window_start": t1},
    }
    # That release gave the reopened ledger a share of its own (start t2, seq from 0,
    # `settled` its own): Redis, one record per sidecar and window, answered it with
    # the first share's usage as the others'.
    second = [
        _old_synced(t2, t2 + 1, used=300, settled=0, seq=0),
        _old_settling(t2, t2 + 2, 1, 5),
    ]
    if order == "settled_up_first":
        records = [delete, *settle, settled_up, put, use, *second]
    else:
        records = [delete, put, use, *settle, *second]
    for record in records:
        engine.apply(decode(record))
    ledger = engine._ledgers["org"]
    share = engine.shares.of(ledger)
    assert share is not None and not engine.shares.closing
    assert ledger.count(Dimension.TOTAL_TOKENS) == 305  # not 605
    sending = share.settling.used[TOKENS] if share.settling is not None else 0
    assert unsettled(ledger.counts(), share)[TOKENS] + sending == 5  # the 5 alone to send
    if order == "reopened_first":
        # Its share's settle numbered 1 again, below what Redis had: refused as a repeat
        # then, not resent now.
        assert share.settling is None and share.settled[TOKENS] == 300


def _calendar_state_of_two_shares(
    older_settled: int, older_owes: int, settling: list[Any] | None = None
) -> dict[str, Any]:
    """An earlier release's state of one day window: a ledger that closed having used
    `older_settled + older_owes` (settled `older_settled` of it, under seq 1), and the
    ledger opened again in its window, which used 5 and synced once since (Redis's
    `older_settled` the others'), with `settling` in flight (plain: seq, used, give_back)."""
    engine = _engine()
    engine.consume(LABELS, Usage(5, 0), "c1", T0)
    data: dict[str, Any] = json.loads(json.dumps(engine.export_state()))
    live = data["shares"]["live"][0][1]
    older = list(live)
    older[3] = _vector(total_tokens=older_settled)  # settled
    older[4] = 1 if older_settled else 0  # seq
    older_counts = _vector(total_tokens=older_settled + older_owes)
    data["shares"]["closing"] = [["org", older, older_counts, live[0] + 86_400]]
    live[2] = _vector(total_tokens=older_settled)  # absorbed
    live[5] = settling
    data["ledgers"][0]["used"][TOKENS] = 5 + older_settled
    data["format"] = EARLIER
    return data


@pytest.mark.parametrize(("older_settled", "older_owes"), [(300, 0), (0, 40), (300, 40)])
def test_two_shares_of_one_window_in_an_earlier_state_become_one_that_settles_each_once(
    older_settled: int, older_owes: int
) -> None:
    data = _calendar_state_of_two_shares(older_settled, older_owes)
    restored = Engine.from_state(data, global_enabled=True)
    assert not restored.shares.closing and restored.shares.dropped == 0
    ledger = restored._ledgers["org"]
    share = restored.shares.of(ledger)
    assert share is not None
    assert ledger.count(Dimension.TOTAL_TOKENS) == 5 + older_settled + older_owes
    assert share.settled[TOKENS] == older_settled and share.absorbed[TOKENS] == 0
    assert unsettled(ledger.counts(), share)[TOKENS] == 5 + older_owes
    assert share.seq == (1 if older_settled else 0)


def _day_record(engine: Engine, op: str, args: dict[str, Any]) -> dict[str, Any]:
    return _share_record(op, engine._ledgers["org"].window_start, T0 + 10, args)


def test_the_earlier_releases_records_of_a_folded_share_count_its_settles_once() -> None:
    engine = Engine.from_state(_calendar_state_of_two_shares(300, 0), global_enabled=True)
    ledger = engine._ledgers["org"]
    share = engine.shares.of(ledger)
    assert share is not None
    # That release's next round for the reopened ledger's share: a renewal, with its
    # own count of settles (0), then its first settle, numbered 1 again: Redis had 1.
    records = [
        _day_record(engine, "share_synced", _synced_args(used=300, settled=0, seq=0)),
        _day_record(engine, "share_settling", _settling_args(1, 5)),  # refused then: not resent now
    ]
    found = [engine.apply(decode(record))[0] for record in records]
    assert found == [True, False]
    assert ledger.count(Dimension.TOTAL_TOKENS) == 305 and share.settled[TOKENS] == 300
    assert share.settling is None and unsettled(ledger.counts(), share)[TOKENS] == 5
    # A settle numbered above Redis's counts once confirmed, whatever its record says.
    second = _settling_args(2, 5)
    engine.apply(decode(_day_record(engine, "share_settling", second)))
    engine.apply(decode(_day_record(engine, "share_synced", _synced_args(305, 5, 2))))
    assert share.settled[TOKENS] == 305 and ledger.count(Dimension.TOTAL_TOKENS) == 305
    assert unsettled(ledger.counts(), share)[TOKENS] == 0
    # Once the journal is replayed, this release's rules: a stale settle is a bug.
    engine.replayed()
    with pytest.raises(InvalidArgument, match="seq"):
        engine.apply(decode(_day_record(engine, "share_settling", second)))


@pytest.mark.parametrize("form", [FORMAT, EARLIER])
def test_a_share_of_one_ledger_takes_its_settles_from_its_records_whatever_the_form(
    form: str,
) -> None:
    # Releases writing the earlier form since one share per window journal what this one
    # does: a fresh settle Redis refused as a repeat is left out of `settled`.
    engine = _engine()
    engine.consume(LABELS, Usage(5, 0), "c1", T0)
    data: dict[str, Any] = json.loads(json.dumps(engine.export_state()))
    engine = Engine.from_state({**data, "format": form}, global_enabled=True)
    refused = _synced_args(used=9, settled=0, seq=7)
    engine.apply(decode(_day_record(engine, "share_settling", _settling_args(1, 5))))
    engine.apply(decode(_day_record(engine, "share_synced", refused)))
    ledger = engine._ledgers["org"]
    share = engine.shares.of(ledger)
    assert share is not None and share.settling is None
    assert unsettled(ledger.counts(), share)[TOKENS] == 5  # sent again, numbered above 7


@pytest.mark.parametrize(
    ("settling", "in_flight"),
    [([1, _vector(total_tokens=5), []], None), ([2, _vector(total_tokens=5), []], 2)],
)
def test_a_settle_in_flight_numbered_below_what_redis_had_is_owed_again_after_a_fold(
    settling: list[Any], in_flight: int | None
) -> None:
    data = _calendar_state_of_two_shares(300, 0, settling)
    engine = Engine.from_state(data, global_enabled=True)
    ledger = engine._ledgers["org"]
    share = engine.shares.of(ledger)
    assert share is not None and share.seq == 1
    # Numbered 1, as the older share's applied settle: Redis refused it, sent again.
    assert (share.settling.seq if share.settling else None) == in_flight
    sending = share.settling.used[TOKENS] if share.settling else 0
    assert unsettled(ledger.counts(), share)[TOKENS] + sending == 5


def test_the_starts_of_many_folded_shares_are_bounded_and_the_newest_kept() -> None:
    engine = _engine(window="lifetime")
    engine.consume(LABELS, Usage(300, 0), "c1", T0)
    data: dict[str, Any] = json.loads(json.dumps(engine.export_state()))
    data["ledgers"][0]["anchor"] = data["ledgers"][0]["window_start"] = T0
    live = data["shares"]["live"][0][1]
    live[0] = T0
    older = [list(live) for _ in range(MAX_LEGACY_STARTS + 4)]
    for i, plain in enumerate(older):
        plain[0] = T0 - 100 * (i + 1)
    data["shares"]["closing"] = [["org", plain, [0] * VECTOR_SIZE, None] for plain in older]
    data["format"] = EARLIER
    share = Engine.from_state(data, global_enabled=True).shares.live["org"]
    assert len(share.legacy_starts) == MAX_LEGACY_STARTS
    assert share.legacy_starts[-1] == T0  # the live share's own, which its journal names
