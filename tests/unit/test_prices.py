"""The price table: names match case-insensitively after their provider prefix and hosted
spelling are removed, an entry matches itself or itself plus version suffixes only, a
different model that starts with a known name is never priced as it, all five token
kinds are priced with one rounding, explain() says why, and the memo stays bounded.

Method: the matching rules are checked on small hand-made tables (so each rule is seen
alone, whatever the defaults hold) and on the default table (so the shipped entries
really resolve the names providers use); costs are compared with exact rational
arithmetic.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetd.core import InvalidArgument, Price, PriceTable, Usage, default_price_table
from budgetd.core.default_prices import DEFAULT_PRICE_ROWS
from budgetd.core.prices import (
    MAX_MODELS,
    MEMO_MAX,
    VERSION_SUFFIX,
    PriceMatch,
    anthropic_cache_write,
    normalise_model,
)

DEFAULTS = default_price_table()


def flat(micro: int) -> Price:
    """The same rate for every token kind."""
    return Price(micro, micro, micro, micro, micro)


def table(*names: str) -> PriceTable:
    """A table whose entry number i costs i + 1 micro-USD per 1M tokens of every kind, so
    each entry's price is different from every other's."""
    return PriceTable({name: flat(i + 1) for i, name in enumerate(names)})


def entry_of(prices: PriceTable, model: str) -> str | None:
    match = prices.explain(model)
    assert match.price == prices.lookup(model), model  # explain and lookup agree
    return None if match.entry is None else match.entry.name


# --- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "normalised"),
    [
        ("GPT-4o", "gpt-4o"),
        ("  gpt-4o ", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("openrouter/openai/gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet"),  # OpenRouter spells dots
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("x-ai/grok-4", "grok-4"),
        ("models/gemini-2.0-flash", "gemini-2.0-flash"),
        (
            "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro",
            "gemini-2.5-pro",
        ),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022-v2:0"),
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet-20250219-v1:0"),
        ("eu.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-20250514-v1:0"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929-v1:0"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "claude-3-5-haiku-20241022-v1:0",
        ),
        ("meta.llama3-1-70b-instruct-v1:0", "llama3-1-70b-instruct-v1:0"),
        ("mistral.mistral-large-2407-v1:0", "mistral-large-2407-v1:0"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2@20241022"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b-instruct"),
        ("accounts/fireworks/models/llama-v3p1-8b-instruct", "llama-v3p1-8b-instruct"),
        ("gpt-4.1-mini", "gpt-4.1-mini"),  # dots stay outside Claude names
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("us.gpt-4o", "gpt-4o"),
        ("openai/", ""),
    ],
)
def test_normalise_model(model: str, normalised: str) -> None:
    """Lower case, the last path segment, no Bedrock region or vendor, Claude dots as -."""
    assert normalise_model(model) == normalised
    assert normalise_model(normalised) == normalised  # normalising twice changes nothing


# --- case and hosted spellings against the default table -----------------------------------


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("GPT-4o", "gpt-4o"),
        ("Gpt-4O-Mini", "gpt-4o-mini"),
        ("Claude-3-5-Sonnet-20241022", "claude-3-5-sonnet"),
        ("GEMINI-2.5-PRO", "gemini-2.5-pro"),
        ("DeepSeek-Chat", "deepseek-chat"),
        ("Grok-4", "grok-4"),
    ],
)
def test_names_match_case_insensitively(model: str, entry: str) -> None:
    assert entry_of(DEFAULTS, model) == entry
    assert entry_of(DEFAULTS, model.lower()) == entry


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        # provider prefixes and routers
        ("openai/gpt-4o", "gpt-4o"),
        ("openai/o3-pro", "o3-pro"),
        ("anthropic/claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("openrouter/openai/gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic/claude-3.7-sonnet", "claude-3-7-sonnet"),
        ("anthropic/claude-opus-4.1", "claude-opus-4-1"),
        ("anthropic/claude-haiku-4.5", "claude-haiku-4-5"),
        ("google/gemini-2.5-flash", "gemini-2.5-flash"),
        ("x-ai/grok-3-mini", "grok-3-mini"),
        ("mistralai/mistral-large-2411", "mistral-large"),
        ("deepseek/deepseek-reasoner", "deepseek-reasoner"),
        # Bedrock: vendor prefix, cross-region profiles, ARNs
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"),
        ("eu.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("apac.anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet"),
        ("us.anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "claude-3-5-haiku",
        ),
        ("meta.llama3-1-70b-instruct-v1:0", "llama3-1-70b-instruct"),
        ("us.meta.llama3-3-70b-instruct-v1:0", "llama3-3-70b-instruct"),
        ("mistral.mistral-large-2407-v1:0", "mistral-large"),
        # Vertex AI
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("claude-3-7-sonnet@20250219", "claude-3-7-sonnet"),
        ("models/gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("publishers/google/models/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        # Llama hosts
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b-instruct"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama-3.3-70b-instruct-turbo"),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "meta-llama-3.1-8b-instruct-turbo"),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout-17b-16e-instruct"),
        ("llama-3.3-70b-versatile", "llama-3.3-70b-versatile"),
        ("llama-3.1-8b-instant", "llama-3.1-8b-instant"),
        ("meta-llama/llama-4-maverick-17b-128e-instruct", "llama-4-maverick-17b-128e-instruct"),
        ("accounts/fireworks/models/llama-v3p3-70b-instruct", "llama-v3p3-70b-instruct"),
        ("accounts/fireworks/models/llama4-scout-instruct-basic", "llama4-scout-instruct-basic"),
    ],
)
def test_provider_prefixes_and_hosted_spellings(model: str, entry: str) -> None:
    """Routers', clouds' and hosts' spellings find the vendor's (or host's) entry."""
    assert entry_of(DEFAULTS, model) == entry


def test_two_hosts_spell_one_llama_model_apart_and_are_priced_apart() -> None:
    """Groq's and Together's Llama 3.3 70B ids are different entries with their prices."""
    groq = DEFAULTS.lookup("llama-3.3-70b-versatile")
    together = DEFAULTS.lookup("meta-llama/Llama-3.3-70B-Instruct-Turbo")
    assert groq is not None and together is not None
    assert (groq.input, groq.output) == (590_000, 790_000)
    assert (together.input, together.output) == (880_000, 880_000)


# --- version suffixes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "suffix"),
    [
        ("m-2024-07-18", "-2024-07-18"),  # OpenAI dates
        ("m-20250219", "-20250219"),  # Anthropic dates
        ("m-001", "-001"),  # Gemini versions
        ("m-2411", "-2411"),  # Mistral year-month
        ("m-0613", "-0613"),  # OpenAI month-day
        ("m-latest", "-latest"),
        ("m-v1", "-v1"),
        ("m-v1:0", "-v1:0"),  # Bedrock
        ("m-20241022-v2:0", "-20241022-v2:0"),
        ("m@20241022", "@20241022"),  # Vertex
        ("m@001", "@001"),
        ("m@latest", "@latest"),
        ("m-v2@20241022", "-v2@20241022"),
        ("M-LATEST", "-latest"),
    ],
)
def test_each_version_suffix_matches_the_entry(model: str, suffix: str) -> None:
    prices = table("m")
    match = prices.explain(model)
    assert match.entry is not None and match.entry.name == "m"
    assert match.reason == f'version suffix "{suffix}"'
    assert VERSION_SUFFIX.fullmatch(suffix)


@pytest.mark.parametrize(
    "model",
    [
        "m-preview",
        "m-exp",
        "m-mini",
        "m-pro",
        "m-nano",
        "m-turbo",
        "m-instruct",
        "m-high",
        "m-1",  # claude-opus-4-1 is not claude-opus-4
        "m-12",
        "m-123456",  # neither a version (3-4 digits) nor a date (8)
        "m-2024-07",
        "m-2024-07-18-preview",
        "m:free",
        "m:thinking",
        "m@",
        "m@v1",
        "m-",
        "mm",
        "m2",
        "m.1",
        "m_latest",
        "m-latest-mini",
    ],
)
def test_anything_else_after_an_entry_is_a_different_model(model: str) -> None:
    prices = table("m")
    assert prices.lookup(model) is None
    assert prices.explain(model).reason.startswith("unknown: ")


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("o1-pro", "o1"),
        ("o3-pro", "o3"),
        ("gpt-5-pro", "gpt-5"),
        ("gpt-4o-mini", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o"),
        ("o1-mini", "o1"),
        ("claude-opus-4-1", "claude-opus-4"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("grok-4-fast-reasoning", "grok-4"),
        ("gpt-4o-audio-preview", "gpt-4o"),
        ("gpt-4-1106-preview", "gpt-4"),
    ],
)
def test_a_model_that_starts_with_a_known_name_is_not_priced_as_it(model: str, base: str) -> None:
    """With only the base model in the table, the longer name is unknown (not the base)."""
    prices = table(base)
    assert prices.lookup(model) is None
    assert f"(nearest entries: {base})" in prices.explain(model).reason


@pytest.mark.parametrize(
    ("model", "entry", "base"),
    [
        ("o1-pro", "o1-pro", "o1"),
        ("o1-pro-2025-03-19", "o1-pro", "o1"),
        ("o3-pro", "o3-pro", "o3"),
        ("gpt-5-pro", "gpt-5-pro", "gpt-5"),
        ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "gpt-4o"),
        ("o1-mini-2024-09-12", "o1-mini", "o1"),
        ("grok-4-fast-reasoning", "grok-4-fast-reasoning", "grok-4"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite", "gemini-2.5-flash"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5", "claude-opus-4"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13", "gpt-4o"),
    ],
)
def test_the_defaults_price_such_models_as_themselves(model: str, entry: str, base: str) -> None:
    """Each has its own entry, at a price different from the model its name starts with."""
    assert entry_of(DEFAULTS, model) == entry
    assert DEFAULTS.lookup(model) != DEFAULTS.prices[base]


def test_pro_models_cost_what_their_vendor_charges_not_the_base_price() -> None:
    """The issue's case: o1-pro, o3-pro and gpt-5-pro were priced as their base models."""
    for model, input_usd, output_usd in [
        ("o1-pro", 150, 600),
        ("o3-pro", 20, 80),
        ("gpt-5-pro", 15, 120),
    ]:
        price = DEFAULTS.lookup(model)
        assert price is not None
        assert (price.input, price.output) == (input_usd * 10**6, output_usd * 10**6), model


def test_latest_is_the_entry_and_an_exact_entry_wins_over_a_suffix() -> None:
    """`claude-3-5-sonnet-latest` is claude-3-5-sonnet; a table with an entry of that exact
    name uses that entry; the longest entry followed by a suffix wins."""
    assert entry_of(DEFAULTS, "claude-3-5-sonnet-latest") == "claude-3-5-sonnet"
    own = table("claude-3-5-sonnet", "claude-3-5-sonnet-latest")
    assert own.explain("claude-3-5-sonnet-latest").reason == "exact"
    assert own.lookup("claude-3-5-sonnet-latest") == flat(2)
    assert own.lookup("claude-3-5-sonnet-20241022") == flat(1)
    nested = table("a", "a-2024")
    assert nested.explain("a-2024-07-18").reason == 'version suffix "-2024-07-18"'
    assert nested.lookup("a-2024-07-18") == flat(1)  # a-2024 + "-07-18" is no suffix
    assert nested.lookup("a-2024-0718") == flat(2)  # a-2024 + "-0718"
    # The first gpt-4o snapshot has its own (launch) price; later ones are gpt-4o.
    assert DEFAULTS.lookup("gpt-4o-2024-05-13") == DEFAULTS.prices["gpt-4o-2024-05-13"]
    assert DEFAULTS.lookup("gpt-4o-2024-08-06") == DEFAULTS.prices["gpt-4o"]


@pytest.mark.parametrize("model", ["gpt", "acme/unknown", "unknown-model", "", "   ", "openai/"])
def test_unknown_models_have_no_price(model: str) -> None:
    assert DEFAULTS.lookup(model) is None
    assert DEFAULTS.cost_of(Usage(input_tokens=10, model=model)) is None


# --- explain -------------------------------------------------------------------------------


def test_explain_reasons() -> None:
    prices = PriceTable(
        {"o1": flat(1), "o1-mini": flat(2), "gpt-4o": flat(3)}, {"o1": "default: x, 2025-11"}
    )
    exact = prices.explain("O1")
    assert exact == PriceMatch("O1", "o1", exact.entry, "exact")
    assert exact.entry is not None
    assert (exact.entry.name, exact.entry.price, exact.entry.source) == (
        "o1",
        flat(1),
        "default: x, 2025-11",
    )
    dated = prices.explain("openai/gpt-4o-2024-08-06")
    assert (dated.normalized, dated.reason) == ("gpt-4o-2024-08-06", 'version suffix "-2024-08-06"')
    assert dated.entry is not None and dated.entry.source == ""  # none was given
    assert prices.explain("o1-pro").reason == (
        'unknown: "o1-pro" is not in the table and "-pro" is not a version suffix of "o1" '
        "(nearest entries: o1)"
    )
    assert prices.explain("o1-mini-high").reason.endswith("(nearest entries: o1-mini, o1)")
    assert prices.explain("gpt-4").reason == (
        'unknown: "gpt-4" is not in the table (nearest entries: gpt-4o)'
    )
    assert prices.explain("llama-3").reason == (
        'unknown: "llama-3" is not in the table (no entry is near it)'
    )
    assert prices.explain("").reason == "unknown: no model given"
    assert prices.explain("openai/").reason == (
        'unknown: "openai/" has no model name once its prefix is removed'
    )
    unknown = prices.explain("o1-pro")
    assert (unknown.entry, unknown.price, unknown.normalized) == (None, None, "o1-pro")


def test_default_entries_carry_their_source_and_date() -> None:
    match = DEFAULTS.explain("gpt-4o")
    assert match.entry is not None
    assert match.entry.source == "default: openai.com/api/pricing, 2025-11"
    listed = DEFAULTS.entries()
    assert [entry.name for entry in listed] == sorted(DEFAULTS.prices)
    for entry in listed:
        assert re.fullmatch(r"default: [a-z0-9.-]+\.[a-z]+(/[\w./-]*)?, \d{4}-\d{2}", entry.source)


@settings(database=None, max_examples=300, deadline=None)
@given(st.text(alphabet="abo1-@:.v/2G0", max_size=16))
def test_explain_and_lookup_agree(model: str) -> None:
    """For any name, explain() resolves exactly as lookup() does (memoised or not)."""
    prices = table("o1", "o1-mini", "gpt-4o", "a.b", "2")
    for _ in range(2):  # the second lookup is a memo hit
        match = prices.explain(model)
        assert match.price == prices.lookup(model)
        assert match.normalized == normalise_model(model)
        assert (match.entry is None) == match.reason.startswith("unknown: ")


# --- the memo ------------------------------------------------------------------------------


def test_the_memo_is_bounded_and_starts_over_when_full() -> None:
    prices = table("gpt-4o")
    for i in range(MEMO_MAX):
        prices.lookup(f"unknown-{i}")
    assert len(prices._memo) == MEMO_MAX
    assert prices.lookup("gpt-4o") == flat(1)  # the lookup that finds the memo full
    assert len(prices._memo) == 1
    for i in range(3 * MEMO_MAX):
        prices.cost_of(Usage(input_tokens=1, model=f"m-{i}"))
        assert len(prices._memo) <= MEMO_MAX


def test_a_seen_model_is_answered_from_the_memo() -> None:
    """The second lookup of a name returns the memoised answer, a known one and None."""
    prices = table("gpt-4o")
    assert prices.lookup("GPT-4o-2024-08-06") == flat(1)
    assert prices._memo == {"GPT-4o-2024-08-06": flat(1)}
    prices._memo["GPT-4o-2024-08-06"] = flat(9)  # planted: proves the memo is what answers
    assert prices.lookup("GPT-4o-2024-08-06") == flat(9)
    assert prices.cost_of(Usage(input_tokens=10**6, model="GPT-4o-2024-08-06")) == 9
    assert prices.lookup("nope") is None
    assert "nope" in prices._memo


# --- cost arithmetic -----------------------------------------------------------------------


def test_cost_prices_each_token_kind_at_its_rate() -> None:
    """1M tokens of each kind: uncached input = input - cached - cache write, output =
    output - reasoning, each at its own rate."""
    price = Price(input=1, output=10, cached_input=100, cache_write_input=1_000, reasoning=10_000)
    m = 10**6
    assert price.cost(m, 0) == 1
    assert price.cost(m, 0, cached_input_tokens=m) == 100
    assert price.cost(m, 0, cache_write_input_tokens=m) == 1_000
    assert price.cost(0, m) == 10
    assert price.cost(0, m, reasoning_tokens=m) == 10_000
    assert price.cost(4 * m, 3 * m, m, 2 * m, m) == 1 + 100 + 2_000 + 20 + 10_000


def test_cost_of_prices_usage_with_every_token_kind() -> None:
    """claude-3-5-sonnet: input 3, cached 0.30, cache write 3.75, output 15, reasoning 15 USD."""
    usage = Usage(
        input_tokens=10_000,
        output_tokens=2_000,
        cached_input_tokens=6_000,
        cache_write_input_tokens=3_000,
        reasoning_tokens=500,
        model="claude-3-5-sonnet-20241022",
    )
    # 1,000 x 3 + 6,000 x 0.30 + 3,000 x 3.75 + 1,500 x 15 + 500 x 15 micro-USD.
    assert DEFAULTS.cost_of(usage) == 3_000 + 1_800 + 11_250 + 22_500 + 7_500
    o1 = Usage(input_tokens=1_000, output_tokens=1_000, reasoning_tokens=800, model="o1")
    assert DEFAULTS.cost_of(o1) == 15_000 + 12_000 + 48_000  # reasoning at the output price


def test_cost_rounds_half_up_once_on_the_sum() -> None:
    """Half a micro-USD rounds up; the five parts are summed before the one rounding."""
    one = flat(1)  # 1 micro-USD per 1M tokens
    assert one.cost(500_000, 0) == 1
    assert one.cost(499_999, 0) == 0
    assert one.cost(300_000, 300_000) == 1  # rounding each part would give 0
    assert one.cost(1_499_999, 0) == 1
    assert one.cost(1_500_000, 0) == 2
    parts = Price(input=1, output=1, cached_input=1, cache_write_input=1, reasoning=1)
    # 0.1 micro-USD of each of the five kinds: 0.5 in all, rounded up once.
    assert parts.cost(300_000, 200_000, 100_000, 100_000, 100_000) == 1
    gpt_4o = DEFAULTS.prices["gpt-4o"]
    assert gpt_4o.cost(1, 0) == 3  # 2.5 micro-USD
    assert gpt_4o.cost(1, 0, 1) == 1  # 1.25 micro-USD, cached
    assert gpt_4o.cost(1, 1, 1) == 11  # 11.25 micro-USD
    claude = DEFAULTS.prices["claude-3-haiku"]
    assert claude.cost(1, 0, 0, 1) == 0  # a cache write of 0.30 micro-USD
    assert claude.cost(2, 0, 0, 2) == 1  # 0.60 micro-USD


@settings(database=None, max_examples=300, deadline=None)
@given(
    rates=st.tuples(*[st.integers(min_value=0, max_value=10**9)] * 5),
    input_tokens=st.integers(min_value=0, max_value=10**12),
    output_tokens=st.integers(min_value=0, max_value=10**12),
    shares=st.tuples(*[st.fractions(min_value=0, max_value=1)] * 3),
)
def test_cost_is_the_exact_amount_rounded_half_up(
    rates: tuple[int, int, int, int, int],
    input_tokens: int,
    output_tokens: int,
    shares: tuple[Fraction, Fraction, Fraction],
) -> None:
    """cost() and cost_of() equal floor(exact + 1/2) of the exact rational micro-USD."""
    cached = int(input_tokens * shares[0])
    written = int((input_tokens - cached) * shares[1])
    reasoning = int(output_tokens * shares[2])
    price = Price(*rates)
    exact = Fraction(
        (input_tokens - cached - written) * price.input
        + cached * price.cached_input
        + written * price.cache_write_input
        + (output_tokens - reasoning) * price.output
        + reasoning * price.reasoning,
        1_000_000,
    )
    expected = int(exact + Fraction(1, 2))
    assert price.cost(input_tokens, output_tokens, cached, written, reasoning) == expected
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_input_tokens=written,
        reasoning_tokens=reasoning,
        model="m",
    )
    assert PriceTable({"m": price}).cost_of(usage) == expected


def test_cost_of_prefers_the_explicit_cost() -> None:
    """An explicit cost wins over the table, even for unknown or missing models."""
    assert DEFAULTS.cost_of(Usage(input_tokens=10**6, model="gpt-4o", cost_micro_usd=7)) == 7
    assert DEFAULTS.cost_of(Usage(input_tokens=10**6, model="nope", cost_micro_usd=0)) == 0
    assert DEFAULTS.cost_of(Usage(input_tokens=10**6)) is None
    assert DEFAULTS.cost_of(Usage(input_tokens=10**6, output_tokens=10**6, model="gpt-4o")) == (
        12_500_000
    )


# --- the default table ---------------------------------------------------------------------


def test_every_default_row_is_complete_and_finds_itself() -> None:
    """One row per model: normalised name, five rates, source and date; cached input and
    cache write are never above their sensible bounds; every entry prices itself."""
    names = [row[0] for row in DEFAULT_PRICE_ROWS]
    assert len(names) == len(set(names)) == len(DEFAULTS.prices)
    for name, price in DEFAULTS.prices.items():
        assert normalise_model(name) == name
        assert DEFAULTS.explain(name).reason == "exact", name
        assert price.input > 0 and price.output > 0, name
        assert price.cached_input <= price.input, name
        assert price.reasoning == price.output, name  # every vendor here bills it as output
        if name == "claude-3-haiku":  # Anthropic lists $0.30 and $0.03, not 1.25x and 0.1x
            assert (price.cache_write_input, price.cached_input) == (300_000, 30_000)
        elif name.startswith("claude-"):
            assert price.cache_write_input == anthropic_cache_write(price.input), name
        else:
            assert price.cache_write_input == price.input, name
        usage = Usage(input_tokens=10**6, output_tokens=10**6, model=name)
        assert DEFAULTS.cost_of(usage) == price.input + price.output, name


@pytest.mark.parametrize(
    "model",
    [
        # OpenAI
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o1-mini",
        "o1-pro",
        "o3",
        "o3-mini",
        "o3-pro",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5-pro",
        # Anthropic, by the ids the API takes
        "claude-3-haiku-20240307",
        "claude-3-sonnet-20240229",
        "claude-3-opus-20240229",
        "claude-3-5-haiku-20241022",
        "claude-3-5-sonnet-20241022",
        "claude-3-7-sonnet-20250219",
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-5-20250929",
        "claude-opus-4-20250514",
        "claude-opus-4-1-20250805",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-5-20251101",
        "claude-sonnet-4-0",
        "claude-opus-4-0",
        # Google
        "gemini-1.5-pro",
        "gemini-1.5-flash",
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        # xAI
        "grok-2-1212",
        "grok-3",
        "grok-3-mini",
        "grok-4-0709",
        # Mistral
        "mistral-large-latest",
        "mistral-medium-2508",
        "mistral-small-2503",
        "codestral-2501",
        # DeepSeek
        "deepseek-chat",
        "deepseek-reasoner",
        # Llama 3.1 / 3.3 / 4 on Groq, Together, Fireworks
        "llama-3.1-8b-instant",
        "llama-3.3-70b-versatile",
        "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
        "accounts/fireworks/models/llama-v3p1-405b-instruct",
        "accounts/fireworks/models/llama4-maverick-instruct-basic",
    ],
)
def test_the_defaults_cover_the_current_models(model: str) -> None:
    assert DEFAULTS.lookup(model) is not None, DEFAULTS.explain(model).reason


# --- building tables -----------------------------------------------------------------------


def test_extended_adds_models_with_defaults_for_the_optional_rates() -> None:
    """cached input defaults to input, reasoning to output, cache write to input (1.25 x
    for Claude models); names are normalised; the original table is unchanged."""
    bigger = DEFAULTS.extended(
        {
            "models": {
                "My-Model": {"input": "1", "output": "2"},
                "anthropic/claude-next": {"input": "0.000003", "output": "2"},
                "all": {
                    "input": "1",
                    "output": "2",
                    "cached_input": "0.5",
                    "cache_write_input": "1.5",
                    "reasoning": "4",
                },
            }
        },
        source="prices.toml",
    )
    assert bigger.prices["my-model"] == Price(1_000_000, 2_000_000, 1_000_000, 1_000_000, 2_000_000)
    assert bigger.prices["claude-next"] == Price(3, 2_000_000, 3, 4, 2_000_000)  # 3.75 -> 4
    assert bigger.prices["all"] == Price(1_000_000, 2_000_000, 500_000, 1_500_000, 4_000_000)
    assert bigger.explain("my-model-v2").reason == 'version suffix "-v2"'
    assert bigger.entries()[0].source in ("prices.toml", "default: openai.com/api/pricing, 2025-11")
    assert {e.source for e in bigger.entries() if e.name == "all"} == {"prices.toml"}
    assert bigger.prices["gpt-4o"] == DEFAULTS.prices["gpt-4o"]
    assert "my-model" not in DEFAULTS.prices
    changed = DEFAULTS.extended({"models": {"GPT-4o": {"input": "1", "output": "1"}}})
    assert changed.prices["gpt-4o"] == flat(1_000_000)
    assert len(changed.prices) == len(DEFAULTS.prices)


def test_extended_with_replace_keeps_only_the_given_models() -> None:
    replaced = DEFAULTS.extended(
        {
            "replace": True,
            "models": {"my-model": {"input": "1", "output": "2", "cached_input": "0"}},
        }
    )
    assert list(replaced.prices) == ["my-model"]
    assert replaced.prices["my-model"].cached_input == 0
    assert replaced.lookup("gpt-4o") is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("x", "prices"),
        ({"modelz": {}}, "prices.modelz"),
        ({"replace": "yes"}, "prices.replace"),
        ({"models": []}, "prices.models"),
        ({"models": {"m": "2.50"}}, "prices.models.m"),
        ({"models": {"m": {"input": "1"}}}, "prices.models.m.output"),
        ({"models": {"m": {"output": "1"}}}, "prices.models.m.input"),
        ({"models": {"m": {"input": "1", "output": "2", "cache": "1"}}}, "prices.models.m.cache"),
        ({"models": {"m": {"input": 0.5, "output": "2"}}}, "prices.models.m.input"),
        ({"models": {"m": {"input": "1", "output": "-2"}}}, "prices.models.m.output"),
        (
            {"models": {"m": {"input": "1", "output": "2", "cached_input": "0.0000001"}}},
            "prices.models.m.cached_input",
        ),
        (
            {"models": {"m": {"input": "1", "output": "2", "reasoning": "1e999999999"}}},
            "prices.models.m.reasoning",
        ),
        (
            {"models": {"m": {"input": "1", "output": "2", "cache_write_input": "1000001"}}},
            "prices.models.m.cache_write_input",
        ),
        ({"models": {"": {"input": "1", "output": "2"}}}, "prices.models"),
        ({"models": {"openai/": {"input": "1", "output": "2"}}}, "prices.models"),
        ({"models": {"m" * 257: {"input": "1", "output": "2"}}}, "prices.models"),
        (
            {"models": {"gpt-4o": {"input": "1", "output": "2"}, "GPT-4o": {}}},
            "prices.models.GPT-4o",
        ),
    ],
)
def test_bad_price_entries_name_the_key(data: Any, field: str) -> None:
    """Every malformed entry is InvalidArgument naming its path."""
    with pytest.raises(InvalidArgument) as raised:
        DEFAULTS.extended(data)
    assert raised.value.field == field


def test_two_spellings_of_one_model_are_refused() -> None:
    with pytest.raises(InvalidArgument, match='names the same model as "gpt-4o"'):
        PriceTable({"gpt-4o": flat(1), "openai/GPT-4o": flat(2)})
    with pytest.raises(InvalidArgument, match="at most 10000 models"):
        PriceTable({f"m{i}": flat(1) for i in range(MAX_MODELS + 1)})


def test_price_error_path_starts_at_where() -> None:
    with pytest.raises(InvalidArgument) as raised:
        PriceTable({}).extended({"models": {"m": {"input": "1"}}}, where="prices.toml")
    assert raised.value.field == "prices.toml.models.m.output"


def test_merged_overrides_by_normalised_name_and_keeps_sources() -> None:
    merged = DEFAULTS.merged({"OpenAI/GPT-4o": flat(7)}, {"OpenAI/GPT-4o": "mine.json"})
    assert merged.prices["gpt-4o"] == flat(7)
    match = merged.explain("gpt-4o")
    assert match.entry is not None and match.entry.source == "mine.json"
    assert merged.explain("o1").entry == DEFAULTS.explain("o1").entry
    only = DEFAULTS.merged({"x": flat(1)}, {}, replace=True)
    assert list(only.prices) == ["x"]


def test_price_table_round_trips_through_to_mapping() -> None:
    """A table rebuilt from its own mapping holds exactly the same prices."""
    prices = DEFAULTS.extended(
        {
            "models": {
                "tiny": {"input": "0.000001", "output": "123456.789012", "reasoning": "0"},
                "claude-x": {"input": "0.000001", "output": "1", "cache_write_input": "0"},
            }
        }
    )
    rebuilt = PriceTable({}).extended(prices.to_mapping())
    assert dict(rebuilt.prices) == dict(prices.prices)
    assert prices.to_mapping()["models"]["gpt-4o"] == {
        "input": "2.5",
        "output": "10",
        "cached_input": "1.25",
        "cache_write_input": "2.5",
        "reasoning": "10",
    }
