"""budgetctl's policy grammar agrees with the daemon's parser, key for key and word for word.

budgetctl installs without the daemon, so `policies put` checks a file with its own copy
of the config file's grammar (`budgetd_client.ctl.policy_grammar`). Goal: the copy never
drifts from the daemon's parser (`Policy.from_mapping`, then `convert.policy_message`).
Method: feed both the same tables — the embedded policies, the README's examples, a list
of mistakes, and generated tables mixing valid and invalid values for every key — and
require the same `budgetd.v1.Policy` for what the daemon accepts and the same
`(key, reason)` for what it refuses.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetd import convert
from budgetd.core import InvalidArgument, Policy, default_policies
from budgetd.core.policy import GLOBAL_CONCURRENCY_RULE
from budgetd_client.ctl import policy_grammar
from budgetd_client.ctl.policy_grammar import PolicyError
from budgetd_client.v1 import budget_pb2 as pb

Outcome = tuple[str, ...] | object


def daemon(data: Any, where: str = "policy") -> Outcome:
    try:
        return convert.policy_message(Policy.from_mapping(data, None, where))
    except InvalidArgument as error:
        return ("refused", error.field, error.rule)
    except Exception as error:  # compared with the client's answer, not hidden
        return ("raised", type(error).__name__, str(error))


def client(data: Any, where: str = "policy") -> Outcome:
    try:
        return policy_grammar.parse(data, where)
    except PolicyError as error:
        return ("refused", error.field, error.rule)
    except Exception as error:  # compared with the daemon's answer
        return ("raised", type(error).__name__, str(error))


def test_the_embedded_policies_read_back_to_the_same_messages() -> None:
    for policy in default_policies():
        data = policy.to_mapping()
        assert client(data) == daemon(data) == convert.policy_message(policy)


README_POLICIES = """
[[policies]]
name = "team-research"
description = "Research team, monthly spend"
match = { tenant = "research" }
caps = { cost_usd = "250.00", total_tokens = 50_000_000 }
window = { kind = "calendar", unit = "month", time_zone = "Europe/Paris" }
enforcement = "soft"
thresholds = [{ percent = 50, severity = "warning" }, { percent = 80, severity = "critical" }]

[[policies]]
name = "per-user-tpm"
match = { tenant = "research", "team.name" = "*" }
per = ["user"]
caps = { total_tokens = 200_000, run_duration = "2h", requests = 0 }
window = { kind = "sliding", duration = "1m" }
evictable = false
close_with_run = true

[[policies]]
name = "thirty-days"
per = "agent"
caps = { cost_micro_usd = 5, concurrency = 3, run_duration_ms = 1500 }
window = { kind = "fixed", duration_s = 2_592_000 }
enforcement = "SHADOW"
thresholds = []

[[policies]]
name = "per-user-day"
per = ["tenant", "user"]
missing = { user = "anonymous" }
caps = { cost_usd = "5", wall_clock = "8h" }
window = { kind = "calendar", unit = "day" }
unpriced = "allow"
idle_ttl = "24h"
"""


def test_valid_files_give_the_same_messages() -> None:
    for i, table in enumerate(tomllib.loads(README_POLICIES)["policies"]):
        where = f"policies[{i}]"
        assert isinstance(daemon(table, where), type(convert.policy_message(Policy("x"))))
        assert client(table, where) == daemon(table, where)


MISTAKES: list[dict[str, Any]] = [
    {},
    {"name": "Bad"},
    {"name": "a", "nmae": "b"},
    {"name": "a", "description": 3},
    {"name": "a", "match": []},
    {"name": "a", "match": {"Tenant": "x"}},
    {"name": "a", "match": {"tenant": ""}},
    {"name": "a", "match": {"tenant": "é" * 129}},
    {"name": "a", "match": {f"k{i}": "v" for i in range(17)}},
    {"name": "a", "per": ["user", "user"]},
    {"name": "a", "per": {"user": 1}},
    {"name": "a", "per": ["x" * 65]},
    {"name": "a", "caps": []},
    {"name": "a", "caps": {"tokens": 1}},
    {"name": "a", "caps": {"total_tokens": "lots"}},
    {"name": "a", "caps": {"total_tokens": True}},
    {"name": "a", "caps": {"total_tokens": 10**12 + 1}},
    {"name": "a", "caps": {"cost_micro_usd": 10**15 + 1}},
    {"name": "a", "caps": {"cost_usd": "12.5.0"}},
    {"name": "a", "caps": {"cost_usd": 1.5}},
    {"name": "a", "caps": {"cost_usd": "0.0000001"}},
    {"name": "a", "caps": {"cost_usd": "-1"}},
    {"name": "a", "caps": {"cost_usd": "NaN"}},
    {"name": "a", "caps": {"cost_usd": "1", "cost_micro_usd": 1}},
    {"name": "a", "caps": {"run_duration": "0s"}},
    {"name": "a", "caps": {"run_duration": "2 hours"}},
    {"name": "a", "window": "weekly"},
    {"name": "a", "window": 3},
    {"name": "a", "window": {"kind": "calendar", "unit": "year"}},
    {"name": "a", "window": {"kind": "calendar", "time_zone": "Mars/Olympus"}},
    {"name": "a", "window": {"kind": "calendar", "time_zone": 1}},
    {"name": "a", "window": {"kind": "fixed"}},
    {"name": "a", "window": {"kind": "sliding", "duration": -5}},
    {"name": "a", "window": {"kind": "sliding", "span": "1m"}},
    {"name": "a", "window": {"kind": "sliding", "duration": "25h"}},
    {"name": "a", "window": {"kind": "fixed", "duration": 2**63 - 1}},
    {"name": "a", "window": {"kind": "fixed", "duration": "15250284452471w"}},
    {"name": "a", "caps": {"wall_clock": "1h"}, "window": {"kind": "sliding", "duration": "1h"}},
    {"name": "a", "unpriced": "sometimes"},
    {"name": "a", "per": ["user"], "missing": {"tenant": "x"}},
    {"name": "a", "per": ["user"], "missing": {"user": "*"}},
    {"name": "a", "idle_ttl": "400d"},
    {"name": "a", "enforcement": "lenient"},
    {"name": "a", "thresholds": {"percent": 1}},
    {"name": "a", "thresholds": [{"percent": 0}]},
    {"name": "a", "thresholds": [{"percent": 50, "severity": "info"}]},
    {"name": "a", "thresholds": [{"percent": 50}, {"percent": 50}]},
    {"name": "a", "thresholds": [{"percent": p} for p in range(1, 9)]},
    {"name": "a", "thresholds": ["50%"]},
    {"name": "a", "evictable": "yes"},
    {"name": "a", "close_with_run": 1},
    {"name": "a", "scope": "global", "window": {"kind": "sliding", "duration": "1h"}},
    {"name": "a", "scope": "global", "caps": {"run_duration": "1h"}},
    {"name": "a", "scope": "global", "evictable": True},
    {"name": "a", "scope": "global", "idle_ttl": "1h"},
    {"name": "a", "scope": "global", "on_unavailable": "maybe"},
    {"name": "a", "on_unavailable": "deny"},
    {"name": "a", "scope": "regional"},
]


@pytest.mark.parametrize("table", MISTAKES, ids=[str(i) for i in range(len(MISTAKES))])
def test_mistakes_are_refused_with_the_same_key_and_reason(table: dict[str, Any]) -> None:
    refused = daemon(table)
    assert isinstance(refused, tuple) and refused[0] == "refused", refused
    assert client(table) == refused


def test_a_table_that_is_not_a_table() -> None:
    assert client(["name"], "policies[3]") == daemon(["name"], "policies[3]")


# --- generated tables ------------------------------------------------------------------
# A valid value and a mistaken one for every key: tables are valid, or valid but for one
# key, or anything at all (several mistakes: which one is reported first must agree too).

ODD = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers()))
KEYS = st.sampled_from(["tenant", "user", "team.name", "a-b_c", "x" * 64])
BAD_KEYS = st.sampled_from(["Tenant", "", "x" * 65, "a b"])
SPANS = st.one_of(st.sampled_from(["90s", "30m", "2h", "30d", "1w", " 5m "]), st.integers(1, 10**6))
SLIDING_SPANS = st.one_of(
    st.sampled_from(["90s", "30m", "2h", "1d", " 5m "]), st.integers(1, 86_400)
)
BAD_SPANS = st.one_of(
    st.sampled_from(["0s", "5 m", "1y", "", "-1s", "60", "9999999999999w", "15250284452471w"]),
    st.sampled_from([0, 2**63 - 1, 10**12]),
    ODD,
)
DIMENSIONS = st.sampled_from(sorted(policy_grammar.DIMENSIONS))
COUNTS = st.one_of(st.integers(min_value=0, max_value=10**12), st.just(10**12))
# The friendly spellings replace their dimension (both would cap it twice).
# (A wall-clock cap is not allowed with a sliding window: the examples cover it.)
DIMENSION_CAPS = st.dictionaries(
    DIMENSIONS.filter(lambda d: d not in ("cost_micro_usd", "run_duration_ms", "wall_clock_ms")),
    COUNTS,
)
FRIENDLY_CAPS = st.fixed_dictionaries(
    {},
    optional={
        "cost_usd": st.one_of(
            st.sampled_from(["12.50", "0", "250", "0.000001", 7]),
            st.decimals(min_value=0, max_value=10**6, places=6),
        ),
        "run_duration": SPANS,
    },
)
WINDOW_KINDS = st.sampled_from(["lifetime", "calendar", "fixed", "sliding", "Calendar"])
VALID: dict[str, st.SearchStrategy[Any]] = {
    "description": st.text(max_size=8),
    "match": st.dictionaries(KEYS, st.sampled_from(["*", "x", "é" * 128]), max_size=3),
    "per": st.one_of(st.lists(KEYS, max_size=3, unique=True), KEYS),
    "caps": st.builds(lambda dims, extra: {**dims, **extra}, DIMENSION_CAPS, FRIENDLY_CAPS),
    "window": st.one_of(
        WINDOW_KINDS.filter(lambda kind: kind.lower() in ("lifetime", "calendar")),
        st.fixed_dictionaries(
            {"kind": st.just("calendar")},
            optional={
                "unit": st.sampled_from(["minute", "hour", "DAY", "week", "month"]),
                "time_zone": st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
            },
        ),
        st.fixed_dictionaries(
            {"kind": st.just("fixed"), "duration": SPANS},
            optional={"duration_s": st.integers(min_value=1, max_value=10**6)},
        ),
        st.fixed_dictionaries(
            {"kind": st.just("sliding"), "duration": SLIDING_SPANS},
            optional={"duration_s": st.integers(min_value=1, max_value=86_400)},
        ),
    ),
    "enforcement": st.sampled_from(["hard", "SOFT", "Shadow"]),
    "thresholds": st.one_of(
        st.none(),
        st.lists(
            st.fixed_dictionaries(
                {"percent": st.integers(min_value=1, max_value=1000)},
                optional={"severity": st.sampled_from(["warning", "CRITICAL", "Final", "ﬁnal"])},
            ),
            max_size=7,
            unique_by=lambda t: t["percent"],
        ),
    ),
    "evictable": st.booleans(),
    "close_with_run": st.booleans(),
    "unpriced": st.sampled_from(["deny", "allow", "ALLOW"]),
    "idle_ttl": st.one_of(SPANS, st.just(0)),
    "scope": st.sampled_from(["local", "LOCAL"]),  # (global tables: GLOBAL_TABLES)
}
INVALID: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(st.sampled_from(["Bad", "", "x" * 65, "a b"]), ODD),
    "description": st.one_of(st.just("d" * 1025), ODD),
    "match": st.one_of(
        st.dictionaries(BAD_KEYS, st.just("x"), min_size=1, max_size=2),
        st.dictionaries(KEYS, st.one_of(st.sampled_from(["", "é" * 129]), ODD), min_size=1),
        st.dictionaries(st.text(max_size=3), st.just("v"), min_size=17, max_size=18),
        ODD,
    ),
    "per": st.one_of(
        st.lists(BAD_KEYS, min_size=1, max_size=2),
        st.just(["user", "user"]),
        st.lists(KEYS, min_size=17, max_size=17),
        st.just(3),
    ),
    "caps": st.one_of(
        st.dictionaries(
            DIMENSIONS, st.sampled_from([-1, 10**15 + 1, "lots", True, 1.5]), min_size=1
        ),
        st.just({"total_tokens": 10**12 + 1}),
        st.dictionaries(
            st.just("cost_usd"),
            st.one_of(st.sampled_from(["12.5.0", "-1", "0.0000001", "Infinity", "NaN"]), ODD),
            min_size=1,
        ),
        st.dictionaries(st.just("run_duration"), BAD_SPANS, min_size=1),
        st.just({"tokens": 1}),
        st.just({"cost_usd": "1", "cost_micro_usd": 1}),
        st.just({"run_duration": "1h", "run_duration_ms": 1}),
        st.dictionaries(st.just("wall_clock"), BAD_SPANS, min_size=1),
        st.just({"wall_clock": "1h", "wall_clock_ms": 1}),
        ODD,
    ),
    "window": st.one_of(
        st.sampled_from(["weekly", ""]),
        st.fixed_dictionaries({"kind": st.one_of(st.just("monthly"), ODD)}),
        st.fixed_dictionaries(
            {"kind": st.just("calendar"), "unit": st.one_of(st.sampled_from(["year", ""]), ODD)}
        ),
        st.fixed_dictionaries(
            {
                "kind": st.just("calendar"),
                "time_zone": st.one_of(st.sampled_from(["Mars/Olympus", "", "../x"]), ODD),
            }
        ),
        st.fixed_dictionaries({"kind": st.sampled_from(["fixed", "sliding"])}),  # no duration
        st.fixed_dictionaries(
            {"kind": st.sampled_from(["fixed", "sliding"]), "duration": BAD_SPANS}
        ),
        st.fixed_dictionaries({"kind": WINDOW_KINDS, "span": st.just("1m")}),  # unknown key
        st.fixed_dictionaries(
            {"kind": st.just("sliding"), "duration": st.sampled_from(["25h", 86_401, "2d"])}
        ),
        ODD,
    ),
    "enforcement": st.one_of(st.sampled_from(["none", "", "HARDER"]), ODD),
    "thresholds": st.one_of(
        st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "percent": st.one_of(st.sampled_from([0, 1001, -1, True]), ODD),
                        "severity": st.one_of(st.sampled_from(["info", ""]), ODD),
                    },
                ),
                ODD,
            ),
            min_size=1,
            max_size=8,
        ),
        st.just([{"percent": 5}, {"percent": 5}]),
        st.lists(st.builds(dict, percent=st.integers(1, 1000)), min_size=8, max_size=8),
        st.just({"percent": 5}),
    ),
    "evictable": ODD.filter(lambda v: not isinstance(v, bool)),
    "close_with_run": st.one_of(st.just("yes"), st.just(0)),
    "unpriced": st.one_of(st.sampled_from(["maybe", "", "unknown"]), ODD),
    # (None and 0 mean no idle ttl: valid.)
    "idle_ttl": st.one_of(
        st.sampled_from(["367d", "53w", "1y"]),
        st.just(-5),
        ODD.filter(lambda v: v not in (None, 0)),
    ),
    "missing": st.one_of(
        st.just({"zz-not-per": "x"}),
        st.dictionaries(BAD_KEYS, st.just("x"), min_size=1, max_size=1),
        ODD,
    ),
    "scope": st.one_of(st.sampled_from(["galaxy", ""]), ODD),
    "on_unavailable": st.sampled_from(["deny", "allow_local"]),  # local: not allowed
    "nmae": st.just("x"),  # an unknown key
}
NAMES = st.sampled_from(["a", "per-thread", "v1.2_x-y", "x" * 64])
VALID_TABLES = st.fixed_dictionaries({"name": NAMES}, optional=VALID)


@st.composite
def one_mistake(draw: st.DrawFn) -> dict[str, Any]:
    table = dict(draw(VALID_TABLES))
    key = draw(st.sampled_from(sorted(INVALID)))
    table[key] = draw(INVALID[key])
    return table


# Several keys may be wrong at once (the unknown key, checked first, is left out here).
ANY_TABLES = st.fixed_dictionaries(
    {"name": st.integers(0, 3).flatmap(lambda i: INVALID["name"] if i == 0 else NAMES)},
    optional={key: st.one_of(VALID[key], INVALID[key]) for key in VALID},
)
WHERE = st.sampled_from(["policy", "", "policies[2]"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(VALID_TABLES, WHERE)
def test_generated_valid_tables_give_the_same_message(table: dict[str, Any], where: str) -> None:
    accepted = daemon(table, where)
    assert not isinstance(accepted, tuple), (table, accepted)
    assert client(table, where) == accepted


@settings(max_examples=300, deadline=None, derandomize=True)
@given(one_mistake(), WHERE)
def test_generated_tables_with_one_mistake_get_the_same_refusal(
    table: dict[str, Any], where: str
) -> None:
    refused = daemon(table, where)
    assert isinstance(refused, tuple), (table, refused)
    assert client(table, where) == refused


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ANY_TABLES, WHERE)
def test_generated_tables_with_any_mix_get_the_same_answer(
    table: dict[str, Any], where: str
) -> None:
    assert client(table, where) == daemon(table, where)


# Global policies: any mix of keys, with the rules only they have (no sliding window,
# no per-host dimension, nothing that closes a ledger on one sidecar).
GLOBAL_TABLES = st.builds(
    lambda table, extra: {**table, "scope": "global", **extra},
    ANY_TABLES,
    st.fixed_dictionaries(
        {},
        optional={
            "on_unavailable": st.one_of(
                st.sampled_from(["deny", "allow_local", "ALLOW_LOCAL", "maybe"]), ODD
            )
        },
    ),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(GLOBAL_TABLES, WHERE)
def test_generated_global_tables_get_the_same_answer(table: dict[str, Any], where: str) -> None:
    assert client(table, where) == daemon(table, where)


def test_a_global_policy_reads_the_same_and_carries_its_scope() -> None:
    table = {
        "name": "org-daily",
        "scope": "global",
        "on_unavailable": "allow_local",
        "caps": {"cost_usd": "500"},
        "window": {"kind": "calendar", "unit": "day"},
    }
    message = daemon(table)
    assert client(table) == message
    assert isinstance(message, pb.Policy)
    assert message.scope == pb.SCOPE_GLOBAL
    assert message.on_unavailable == pb.ON_UNAVAILABLE_ALLOW_LOCAL
    assert not message.evictable
    slots = {**table, "caps": {"concurrency": 10}}  # a gauge: only under a lifetime window
    refused = ("refused", "policy.caps.concurrency", GLOBAL_CONCURRENCY_RULE)
    assert client(slots) == daemon(slots) == refused
    lifetime = {**slots, "window": "lifetime"}
    assert client(lifetime) == daemon(lifetime)
    assert isinstance(daemon(lifetime), pb.Policy)


def test_amounts_convert_exactly() -> None:
    for amount in ("12.50", "0.000001", "250", 7, Decimal("1.25")):
        table = {"name": "a", "caps": {"cost_usd": amount}}
        assert client(table) == daemon(table)
