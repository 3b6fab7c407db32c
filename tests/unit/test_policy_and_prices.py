"""Policies, money and ledger keys parse exactly and report every error by its key.

Goal: `Policy.from_mapping` names the failing key of every rule it enforces and is the
exact inverse of `to_mapping`; USD amounts convert to integer micro-USD without floats;
ledger keys format and parse back for any label value. The price table's tests are in
test_prices.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetd.core import (
    Dimension,
    Engine,
    InvalidArgument,
    Limits,
    Policy,
    Severity,
    Threshold,
    Usage,
    WindowKind,
    default_policies,
)
from budgetd.core.ledger import format_key, parse_key
from budgetd.core.policy import usd_to_micro

T0 = 1_700_000_000.0
LABEL_KEYS = st.from_regex(r"[a-z0-9_.-]{1,12}", fullmatch=True)
POLICY_NAMES = st.from_regex(r"[a-z0-9_.-]{1,20}", fullmatch=True)
TRICKY_VALUES = st.text(alphabet=",={}%25CD7B3ab", max_size=12) | st.text(max_size=12)


def base(**fields: Any) -> dict[str, Any]:
    """A valid policy mapping named `p`, with `fields` added."""
    return {"name": "p", **fields}


# --- Policy.from_mapping errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"caps": {}}, "policy.name"),
        (base(name="Bad Name"), "policy.name"),
        (base(name="a" * 65), "policy.name"),
        (base(capz={}), "policy.capz"),
        (base(description="x" * 1025), "policy.description"),
        (base(caps={"total_tokens": -1}), "policy.caps.total_tokens"),
        (base(caps={"total_tokens": "100"}), "policy.caps.total_tokens"),
        (base(caps={"total_tokens": True}), "policy.caps.total_tokens"),
        (base(caps={"total_tokens": 1.5}), "policy.caps.total_tokens"),
        (base(caps={"total_tokens": 10**12 + 1}), "policy.caps.total_tokens"),
        (base(caps={"cost_micro_usd": 10**15 + 1}), "policy.caps.cost_micro_usd"),
        (base(caps={"tokens": 5}), "policy.caps.tokens"),
        (base(caps={"cost_usd": "1.0000001"}), "policy.caps.cost_usd"),
        (base(caps={"cost_usd": 1.5}), "policy.caps.cost_usd"),
        (base(caps={"cost_usd": "1", "cost_micro_usd": 5}), "policy.caps.cost_micro_usd"),
        (base(caps={"run_duration": "2x"}), "policy.caps.run_duration"),
        (base(caps={"run_duration": "0s"}), "policy.caps.run_duration"),
        (base(caps={"run_duration": True}), "policy.caps.run_duration"),
        (base(caps=[]), "policy.caps"),
        (
            base(window={"kind": "calendar", "unit": "day", "time_zone": "Mars/Olympus"}),
            "policy.window.time_zone",
        ),
        (base(window={"kind": "calendar", "time_zone": 5}), "policy.window.time_zone"),
        (base(window={"kind": "calendar", "unit": "fortnight"}), "policy.window.unit"),
        (base(window={"kind": "forever"}), "policy.window.kind"),
        (base(window="forever"), "policy.window.kind"),
        (base(window=7), "policy.window"),
        (base(window={"kind": "fixed"}), "policy.window.duration"),
        (base(window={"kind": "sliding", "duration": "-5s"}), "policy.window.duration"),
        (base(window={"kind": "sliding", "duration": 0}), "policy.window.duration"),
        (base(window={"kind": "fixed", "length": "30d"}), "policy.window.length"),
        (base(enforcement="strict"), "policy.enforcement"),
        (base(enforcement=1), "policy.enforcement"),
        (
            base(thresholds=[{"percent": 80}, {"percent": 80, "severity": "critical"}]),
            "policy.thresholds",
        ),
        (base(thresholds=[{"percent": p} for p in range(10, 90, 10)]), "policy.thresholds"),
        (base(thresholds="80"), "policy.thresholds"),
        (base(thresholds=[80]), "policy.thresholds[0]"),
        (base(thresholds=[{"percent": 0}]), "policy.thresholds[0].percent"),
        (base(thresholds=[{"percent": 1001}]), "policy.thresholds[0].percent"),
        (base(thresholds=[{"percent": True}]), "policy.thresholds[0].percent"),
        (
            base(thresholds=[{"percent": 50}, {"percent": 60, "severity": "fatal"}]),
            "policy.thresholds[1].severity",
        ),
        (base(per=["user", "user"]), "policy.per"),
        (base(per=["User"]), "policy.per[0]"),
        (base(per=["user", "a b"]), "policy.per[1]"),
        (base(per=5), "policy.per"),
        (base(match={"user": ""}), "policy.match.user"),
        (base(match={"user": 5}), "policy.match.user"),
        (base(match={"User": "x"}), "policy.match.User"),
        (base(match=["user"]), "policy.match"),
        (base(evictable="yes"), "policy.evictable"),
        (base(close_with_run=1), "policy.close_with_run"),
    ],
)
def test_policy_errors_name_the_key(data: dict[str, Any], field: str) -> None:
    """Each broken rule raises InvalidArgument whose field is the path of the bad key."""
    with pytest.raises(InvalidArgument) as raised:
        Policy.from_mapping(data)
    assert raised.value.field == field
    assert raised.value.rule != ""


def test_policy_that_is_not_a_table_is_rejected() -> None:
    """A non-mapping policy is rejected at the root of its path."""
    with pytest.raises(InvalidArgument) as raised:
        Policy.from_mapping("p")  # type: ignore[arg-type]
    assert raised.value.field == "policy"


def test_policy_error_path_starts_at_where() -> None:
    """The `where` argument prefixes every error path (e.g. the config file position)."""
    with pytest.raises(InvalidArgument) as raised:
        Policy.from_mapping(base(caps={"total_tokens": -1}), where="policies[3]")
    assert raised.value.field == "policies[3].caps.total_tokens"


def test_policy_bounds_follow_limits() -> None:
    """Threshold count and cap size are bounded by the given Limits, inclusively."""
    seven = [{"percent": p} for p in range(10, 80, 10)]
    assert len(Policy.from_mapping(base(thresholds=seven)).thresholds) == 7
    limits = Limits(max_thresholds=2, max_tokens=100)
    with pytest.raises(InvalidArgument) as raised:
        Policy.from_mapping(base(thresholds=seven[:3]), limits)
    assert raised.value.field == "policy.thresholds"
    assert Policy.from_mapping(base(caps={"total_tokens": 100}), limits).caps == (
        (Dimension.TOTAL_TOKENS, 100),
    )
    with pytest.raises(InvalidArgument) as raised:
        Policy.from_mapping(base(caps={"total_tokens": 101}), limits)
    assert raised.value.field == "policy.caps.total_tokens"


def test_limits_reject_non_positive_bounds() -> None:
    """Every bound of Limits must be positive; the error names it."""
    with pytest.raises(InvalidArgument) as raised:
        Limits(max_labels=0)
    assert raised.value.field == "limits.max_labels"
    with pytest.raises(InvalidArgument) as raised:
        Limits(idempotency_max_age_s=-1.0)
    assert raised.value.field == "limits.idempotency_max_age_s"


def test_policy_parsing_normalises_friendly_spellings() -> None:
    """cost_usd, run_duration, per as a string, severities and durations convert exactly."""
    parsed = Policy.from_mapping(
        base(
            per="user",
            caps={"cost_usd": "12.50", "run_duration": "2h", "requests": 0},
            window={"kind": "fixed", "duration": "1w"},
            enforcement="SOFT",
            thresholds=[{"percent": 95, "severity": "FINAL"}, {"percent": 50}],
        )
    )
    assert parsed.per == ("user",)
    assert dict(parsed.caps) == {
        Dimension.COST_MICRO_USD: 12_500_000,
        Dimension.REQUESTS: 0,
        Dimension.RUN_DURATION_MS: 7_200_000,
    }
    assert (parsed.window.kind, parsed.window.duration_s) == (WindowKind.FIXED, 604_800)
    assert parsed.enforcement.value == "soft"
    assert parsed.thresholds == (Threshold(50, Severity.WARNING), Threshold(95, Severity.FINAL))
    assert Policy.from_mapping(base()).is_meter


# --- round trip ----------------------------------------------------------------------------

RICH = {
    "name": "team.budget-1",
    "description": "every field set",
    "match": {"team": "x", "env": "*"},
    "per": ["user", "agent"],
    "caps": {
        "total_tokens": 10,
        "input_tokens": 0,
        "cost_usd": "1.5",
        "run_duration": "2h",
        "concurrency": 3,
        "requests": 10**12,
    },
    "window": {"kind": "calendar", "unit": "week", "time_zone": "Europe/Paris"},
    "enforcement": "shadow",
    "thresholds": [{"percent": 95, "severity": "final"}, {"percent": 50}],
    "evictable": False,
    "close_with_run": True,
}


@pytest.mark.parametrize(
    "window",
    [
        "lifetime",
        {"kind": "calendar", "unit": "month", "time_zone": "Asia/Kolkata"},
        {"kind": "calendar", "unit": "minute"},
        {"kind": "fixed", "duration": "30d"},
        {"kind": "sliding", "duration_s": 60},
    ],
)
def test_policy_round_trips_through_to_mapping(window: Any) -> None:
    """from_mapping(p.to_mapping()) == p, and to_mapping is stable, for every window kind."""
    policy = Policy.from_mapping({**RICH, "window": window})
    mapping = policy.to_mapping()
    again = Policy.from_mapping(mapping)
    assert again == policy
    assert again.to_mapping() == mapping
    assert mapping["caps"]["cost_micro_usd"] == 1_500_000
    assert mapping["caps"]["run_duration_ms"] == 7_200_000


def test_default_policies_round_trip() -> None:
    """Every embedded default policy survives to_mapping/from_mapping unchanged."""
    policies = default_policies()
    assert [p.name for p in policies] == [
        "per-thread",
        "daily",
        "per-agent",
        "runs",
        "agent-usage",
        "model-usage",
    ]
    for policy in policies:
        assert Policy.from_mapping(policy.to_mapping()) == policy


@settings(database=None, max_examples=200, deadline=None)
@given(
    caps=st.dictionaries(
        st.sampled_from([d.name.lower() for d in Dimension]),
        st.integers(min_value=0, max_value=10**12),
        max_size=7,
    ),
    percents=st.lists(st.integers(min_value=1, max_value=1000), unique=True, max_size=7),
    severities=st.lists(st.sampled_from(["warning", "critical", "final"]), min_size=7),
    per=st.lists(LABEL_KEYS, unique=True, max_size=4),
    enforcement=st.sampled_from(["hard", "soft", "shadow"]),
)
def test_policy_round_trip_property(
    caps: dict[str, int],
    percents: list[int],
    severities: list[str],
    per: list[str],
    enforcement: str,
) -> None:
    """Any valid policy equals the parse of its own mapping."""
    thresholds = [{"percent": p, "severity": s} for p, s in zip(percents, severities, strict=False)]
    policy = Policy.from_mapping(
        base(caps=caps, thresholds=thresholds, per=per, enforcement=enforcement)
    )
    assert Policy.from_mapping(policy.to_mapping()) == policy
    assert len(policy.caps) == len(caps)


# --- USD to micro-USD ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        ("0.000001", 1),
        ("12.50", 12_500_000),
        ("2.500000", 2_500_000),
        ("0", 0),
        ("1e-6", 1),
        (3, 3_000_000),
        (Decimal("0.5"), 500_000),
        ("1000000000", 10**15),
    ],
)
def test_usd_to_micro_is_exact(value: object, micro: int) -> None:
    """Strings, ints and Decimals with at most 6 decimals convert exactly."""
    assert usd_to_micro(value, "x") == micro
    assert type(usd_to_micro(value, "x")) is int


@pytest.mark.parametrize(
    "value",
    [0.5, 1.0, True, None, "1.0000001", "-1", "-0.000001", "abc", "", "NaN", "sNaN", "Infinity"],
)
def test_usd_to_micro_rejects_floats_and_inexact_amounts(value: object) -> None:
    """Floats, booleans, negatives, non-numbers and sub-micro amounts are InvalidArgument."""
    with pytest.raises(InvalidArgument) as raised:
        usd_to_micro(value, "prices.models.m.input")
    assert raised.value.field == "prices.models.m.input"


# --- ledger keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ident", "per", "key"),
    [
        (("daily",), (), "daily"),
        (("per-thread", "7f3a"), ("thread",), "per-thread{thread=7f3a}"),
        (("p", "x", "y"), ("a", "b"), "p{a=x,b=y}"),
        (("p", "a,b=c"), ("k",), "p{k=a%2Cb%3Dc}"),
        (("p", "{}"), ("k",), "p{k=%7B%7D}"),
        (("p", "100%"), ("k",), "p{k=100%25}"),
        (("p", "%2C"), ("k",), "p{k=%252C}"),
        (("p", ""), ("k",), "p{k=}"),
    ],
)
def test_ledger_key_format_and_parse(
    ident: tuple[str, ...], per: tuple[str, ...], key: str
) -> None:
    """Keys are `policy{k=v,...}` with `,={}%` escaped, and parse back to their values."""
    assert format_key(ident, per) == key
    assert parse_key(key) == (ident[0], dict(zip(per, ident[1:], strict=True)))


@pytest.mark.parametrize(
    "key", ["", "p{a}", "{a=b}", "p{a=b", "p{a=1,a=2}", "p{a=b}x", "p{=", "p{a=b,}"]
)
def test_malformed_ledger_keys_do_not_parse(key: str) -> None:
    """Strings that format_key cannot produce parse to None."""
    assert parse_key(key) is None


@settings(database=None, max_examples=300, deadline=None)
@given(
    name=POLICY_NAMES,
    pairs=st.lists(st.tuples(LABEL_KEYS, TRICKY_VALUES), unique_by=lambda kv: kv[0], max_size=5),
)
def test_ledger_key_round_trip_property(name: str, pairs: list[tuple[str, str]]) -> None:
    """parse_key(format_key(ident, per)) recovers the policy and every value exactly."""
    per = tuple(k for k, _ in pairs)
    ident = (name, *[v for _, v in pairs])
    key = format_key(ident, per)
    assert parse_key(key) == (name, dict(pairs))


def test_engine_finds_ledgers_whose_values_need_escaping() -> None:
    """get_ledger accepts the escaped key of a ledger whose label value holds `,={}%`."""
    engine = Engine([Policy.from_mapping({"name": "users", "per": ["user"]})])
    value = "a,b={c}%d"
    result, _ = engine.consume({"user": value}, Usage(input_tokens=5), "c1", T0)
    key = format_key(("users", value), ("user",))
    assert [k for k, _ in result.ledgers] == [key]
    status = engine.get_ledger(key, T0)
    assert status.labels == {"user": value}
    assert status.totals.total_tokens == 5
