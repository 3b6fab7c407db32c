"""Model prices and cost arithmetic, in integer micro-USD.

A price is five rates per one million tokens: uncached input, cached input (prompt-cache
reads), cache-write input (prompt-cache creation), output, and reasoning output.

How a model name finds its entry (the README's "Prices" says the same for users):

1. It is normalised (`normalise_model`): lower case; any `provider/` or resource-path
   prefix dropped (`openai/gpt-4o`, `models/gemini-2.0-flash`, `meta-llama/Llama-3.3-…`,
   `projects/…/publishers/google/models/…`); a Bedrock region and vendor prefix dropped
   (`us.anthropic.claude-…` -> `claude-…`); dots in Claude names made hyphens
   (OpenRouter's `claude-3.5-sonnet` is Anthropic's `claude-3-5-sonnet`).
2. It matches an entry exactly, or as an entry followed by version suffixes only
   (`VERSION_SUFFIX`: dates, version numbers, `-latest`, Bedrock `-v2:0`, Vertex
   `@20241022`). A longer entry wins over a shorter one.
3. Anything else is unknown: `o1-pro` is not `o1` and `gpt-4o-mini` is not `gpt-4o`,
   because a name that merely starts with a known one is often a different model at a
   very different price (`o1-pro` costs ten times `o1`).

Entry names are normalised the same way, so `[models."openai/GPT-4o"]` in a price file
is the entry `gpt-4o`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from budgetd.core.errors import InvalidArgument
from budgetd.core.policy import usd_to_micro
from budgetd.core.usage import Usage

TOKENS_PER_PRICE_UNIT = 1_000_000
MAX_MODELS = 10_000
MAX_MODEL_CHARS = 256
# $1,000,000 per million tokens: far above any real price, low enough that no cost sum
# of in-range token counts gets unwieldy.
MAX_RATE_MICRO_USD = 10**12
# Distinct model names a table remembers the answer for; a full memo starts over (a flood
# of made-up names costs a normalisation each, never unbounded memory).
MEMO_MAX: Final = 4096

# One or more of: an OpenAI date (-2024-07-18), an Anthropic date (-20250219), a version
# or short date of 3-4 digits (Gemini -001, Mistral -2411, OpenAI -0613, xAI -1212),
# -latest, a Bedrock version (-v1, -v2:0), a Vertex version (@20241022, @001, @latest).
# Not -preview, -exp, -mini, -pro, -turbo, -instruct or one- and two-digit numbers: those
# name other models (gemini-2.5-flash-preview was priced apart from gemini-2.5-flash;
# claude-opus-4-1 is not claude-opus-4).
VERSION_SUFFIX = re.compile(
    r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{3,4}|-latest|-v\d+(?::\d+)?|@(?:\d{8}|\d{3}|latest))+"
)

# Bedrock model ids: `[region.]vendor.model` (cross-region inference profiles add the
# region: us.anthropic.claude-3-7-sonnet-20250219-v1:0).
_BEDROCK_REGIONS = frozenset({"us", "eu", "apac", "us-gov", "global", "jp", "au", "ca"})
_BEDROCK_VENDORS = frozenset(
    {"anthropic", "meta", "mistral", "amazon", "cohere", "ai21", "deepseek", "openai", "qwen"}
)
_PRICE_KEYS = ("input", "output", "cached_input", "cache_write_input", "reasoning")
_NEAREST_MAX = 3
_SPLIT_CHARS = "-@"


def normalise_model(model: str) -> str:
    """The name a model is looked up by (and an entry is stored under): see the module."""
    name = model.strip().lower()
    name = name[name.rfind("/") + 1 :]
    head, dot, rest = name.partition(".")
    if dot and head in _BEDROCK_REGIONS:
        name = rest
        head, dot, rest = name.partition(".")
    if dot and rest and head in _BEDROCK_VENDORS:
        name = rest
    if name.startswith("claude-"):
        name = name.replace(".", "-")
    return name


def anthropic_cache_write(input_rate: int) -> int:
    """Anthropic's 5-minute cache write: 1.25 x the input rate, rounded half up."""
    return (input_rate * 5 + 2) // 4


def default_cache_write(name: str, input_rate: int) -> int:
    """The cache-write rate of an entry that does not give one: Anthropic's surcharge for
    Claude models, else the input rate (OpenAI, Google, xAI, DeepSeek and the Llama hosts
    bill a cache write as ordinary input)."""
    if normalise_model(name).startswith("claude-"):
        return anthropic_cache_write(input_rate)
    return input_rate


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-USD per one million tokens of each kind."""

    input: int
    output: int
    cached_input: int
    cache_write_input: int
    reasoning: int

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> int:
        """Micro-USD for the tokens; cached and cache-write tokens are parts of the input
        tokens, reasoning tokens a part of the output tokens."""
        scaled = (
            (input_tokens - cached_input_tokens - cache_write_input_tokens) * self.input
            + cached_input_tokens * self.cached_input
            + cache_write_input_tokens * self.cache_write_input
            + (output_tokens - reasoning_tokens) * self.output
            + reasoning_tokens * self.reasoning
        )
        # Round half up once, on the sum, so splitting a call never changes its cost.
        return (scaled + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One entry of a table: its (normalised) name, its price and where it comes from
    (`default: <pricing page>, <date>` or a price file's path)."""

    name: str
    price: Price
    source: str


@dataclass(frozen=True, slots=True)
class PriceMatch:
    """How a model name resolves: what `budgetctl prices MODEL` and GetPrice show."""

    model: str  # as asked
    normalized: str  # as looked up
    entry: PriceEntry | None  # None: unknown
    reason: str  # `exact`, `version suffix "-2024-07-18"` or `unknown: ...`

    @property
    def price(self) -> Price | None:
        return None if self.entry is None else self.entry.price


# A model not looked up yet (None records a lookup that found nothing); compared by identity.
_UNSEEN = Price(0, 0, 0, 0, 0)


class PriceTable:
    """An immutable table of prices with a bounded memo of name lookups."""

    __slots__ = ("_memo", "_prices", "_sources")

    def __init__(
        self, prices: Mapping[str, Price], sources: Mapping[str, str] | None = None
    ) -> None:
        """`sources` is keyed like `prices` (missing: no source)."""
        if len(prices) > MAX_MODELS:
            raise InvalidArgument("prices", f"at most {MAX_MODELS} models")
        table: dict[str, Price] = {}
        named: dict[str, str] = {}
        for name, price in prices.items():
            key = _entry_name(name, "prices")
            if key in table:
                raise InvalidArgument(
                    f"prices.{name}", f'names the same model as "{named[key]}" ("{key}")'
                )
            table[key] = price
            named[key] = name
        given = sources or {}
        self._prices = table
        self._sources = {key: given.get(named[key], "") for key in table}
        self._memo: dict[str, Price | None] = {}

    @property
    def prices(self) -> Mapping[str, Price]:
        """Every entry by its normalised name."""
        return self._prices

    def entries(self) -> list[PriceEntry]:
        """Every entry with its source, by name."""
        return [
            PriceEntry(name, self._prices[name], self._sources[name])
            for name in sorted(self._prices)
        ]

    def lookup(self, model: str) -> Price | None:
        """The price `model` resolves to (see the module), or None when it is unknown."""
        memo = self._memo
        if model in memo:
            return memo[model]
        entry, _, _ = self._resolve(model)
        price = self._prices[entry] if entry else None
        if len(memo) >= MEMO_MAX:
            memo.clear()
        memo[model] = price
        return price

    def _resolve(self, model: str) -> tuple[str, str, str]:
        """(entry name or "", normalised name, version suffix) for a model name."""
        name = normalise_model(model)
        prices = self._prices
        if name in prices:
            return name, name, ""
        # Longest entry first: scan the places a suffix can start, from the right.
        for end in range(len(name) - 1, 0, -1):
            if name[end] in _SPLIT_CHARS and name[:end] in prices:
                suffix = name[end:]
                if VERSION_SUFFIX.fullmatch(suffix) is not None:
                    return name[:end], name, suffix
        return "", name, ""

    def explain(self, model: str) -> PriceMatch:
        """How `model` resolves and why: the same answer as `lookup`, with its reason."""
        entry, name, suffix = self._resolve(model)
        if entry:
            found = PriceEntry(entry, self._prices[entry], self._sources[entry])
            reason = f'version suffix "{suffix}"' if suffix else "exact"
            return PriceMatch(model, name, found, reason)
        return PriceMatch(model, name, None, self._unknown_reason(model, name))

    def _unknown_reason(self, model: str, name: str) -> str:
        if not model.strip():
            return "unknown: no model given"
        if not name:
            return f'unknown: "{model}" has no model name once its prefix is removed'
        starts = self._entries_it_starts_with(name)
        if starts:
            longest = starts[0]
            return (
                f'unknown: "{name}" is not in the table and "{name[len(longest) :]}" is not '
                f'a version suffix of "{longest}" (nearest entries: {", ".join(starts)})'
            )
        near = self._sharing_a_prefix(name)
        if near:
            return f'unknown: "{name}" is not in the table (nearest entries: {", ".join(near)})'
        return f'unknown: "{name}" is not in the table (no entry is near it)'

    def _entries_it_starts_with(self, name: str) -> list[str]:
        """Entries `name` starts with at a word boundary (what a prefix rule would have
        priced it as), longest first."""
        found = [
            entry
            for entry in self._prices
            if len(entry) < len(name) and name.startswith(entry) and name[len(entry)] in "-@.:"
        ]
        found.sort(key=lambda entry: (-len(entry), entry))
        return found[:_NEAREST_MAX]

    def _sharing_a_prefix(self, name: str) -> list[str]:
        """The entries sharing the longest start with `name` (at least 3 characters)."""
        scored: list[tuple[int, str]] = []
        for entry in self._prices:
            shared = _shared_start(name, entry)
            if shared >= 3:
                scored.append((-shared, entry))
        scored.sort()
        return [entry for _, entry in scored[:_NEAREST_MAX]]

    def cost_of(self, usage: Usage) -> int | None:
        """The cost of a usage record: its own cost if given, else priced, else None."""
        if usage.cost_micro_usd is not None:
            return usage.cost_micro_usd
        model = usage.model
        if not model:
            return None
        price = self._memo.get(model, _UNSEEN)
        if price is _UNSEEN:
            price = self.lookup(model)
        if price is None:
            return None
        # Price.cost, inlined (the hot path prices every request), and rearranged so that
        # usage without cache writes or reasoning (most of it) does no more work than
        # before those existed: (in - cached - written) x input + written x write equals
        # (in - cached) x input + written x (write - input), exactly, in integers. The
        # edge rules keep cached + written <= input and reasoning <= output.
        cached = usage.cached_input_tokens
        scaled = (
            (usage.input_tokens - cached) * price.input
            + cached * price.cached_input
            + usage.output_tokens * price.output
        )
        written = usage.cache_write_input_tokens
        reasoning = usage.reasoning_tokens
        if written or reasoning:
            scaled += written * (price.cache_write_input - price.input) + reasoning * (
                price.reasoning - price.output
            )
        return (scaled + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT

    def merged(
        self, prices: Mapping[str, Price], sources: Mapping[str, str], replace: bool = False
    ) -> PriceTable:
        """A new table: this one plus (or, with `replace`, only) `prices`; `sources` is
        keyed like `prices` and says where each comes from. A given entry replaces the
        one of the same normalised name."""
        incoming = PriceTable(prices, sources)  # normalises, and refuses two spellings
        table = {} if replace else dict(self._prices)
        where = {} if replace else dict(self._sources)
        table.update(incoming._prices)
        where.update(incoming._sources)
        return PriceTable(table, where)

    def extended(
        self, data: Mapping[str, Any], where: str = "prices", source: str = ""
    ) -> PriceTable:
        """A new table: this one plus (or, with `replace = true`, only) the given models.

        `data` is `{"replace": bool, "models": {name: {"input": "2.50", "output": "10",
        "cached_input": "1.25", "cache_write_input": "3.125", "reasoning": "10"}}}` with
        USD amounts per one million tokens; `source` is recorded for each entry.
        """
        if not isinstance(data, Mapping):
            raise InvalidArgument(where, "must be a table")
        unknown = sorted(set(data) - {"replace", "models"})
        if unknown:
            raise InvalidArgument(f"{where}.{unknown[0]}", "unknown key (known: models, replace)")
        replace = data.get("replace", False)
        if not isinstance(replace, bool):
            raise InvalidArgument(f"{where}.replace", "must be true or false")
        models = data.get("models", {})
        if not isinstance(models, Mapping):
            raise InvalidArgument(f"{where}.models", "must be a table of model = {input, output}")
        if len(models) > MAX_MODELS:
            raise InvalidArgument(f"{where}.models", f"at most {MAX_MODELS} models")
        parsed: dict[str, Price] = {}
        spelled: dict[str, str] = {}
        for name, entry in models.items():
            key = _entry_name(name, f"{where}.models")
            if key in parsed:
                raise InvalidArgument(
                    f"{where}.models.{name}",
                    f'names the same model as "{spelled[key]}" (both are "{key}")',
                )
            parsed[key] = parse_price(entry, f"{where}.models.{name}", key)
            spelled[key] = name
        return self.merged(parsed, dict.fromkeys(parsed, source), replace)

    def to_mapping(self) -> dict[str, Any]:
        """The table in the price-file form `extended` reads (every rate spelled out)."""
        return {
            "replace": True,
            "models": {
                name: {key: micro_to_usd(getattr(price, key)) for key in _PRICE_KEYS}
                for name, price in sorted(self._prices.items())
            },
        }


def micro_to_usd(micro: int) -> str:
    """Exact decimal USD of a micro-USD amount, without trailing zeros: 1_250_000 -> 1.25."""
    dollars, rest = divmod(micro, 1_000_000)
    return f"{dollars}.{rest:06d}".rstrip("0").rstrip(".")


def _shared_start(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def _entry_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_MODEL_CHARS:
        raise InvalidArgument(where, f"model names are 1..{MAX_MODEL_CHARS} characters")
    key = normalise_model(name)
    if not key:
        raise InvalidArgument(where, f"{name!r} has no model name once its prefix is removed")
    return key


def parse_price(entry: object, where: str, name: str = "") -> Price:
    """A price-file entry (USD per 1M tokens) as a Price. `input` and `output` are
    required; `cached_input` defaults to input, `reasoning` to output and
    `cache_write_input` to the provider's rate for `name` (`default_cache_write`)."""
    if not isinstance(entry, Mapping):
        raise InvalidArgument(where, "must be a table {input, output, cached_input, ...}")
    unknown = sorted(set(entry) - set(_PRICE_KEYS))
    if unknown:
        raise InvalidArgument(f"{where}.{unknown[0]}", f"unknown key (known: {list(_PRICE_KEYS)})")
    for key in ("input", "output"):
        if key not in entry:
            raise InvalidArgument(f"{where}.{key}", "required (USD per 1M tokens)")
    rates = {key: _rate(entry[key], f"{where}.{key}") for key in _PRICE_KEYS if key in entry}
    input_rate = rates["input"]
    return Price(
        input=input_rate,
        output=rates["output"],
        cached_input=rates.get("cached_input", input_rate),
        cache_write_input=rates.get("cache_write_input", default_cache_write(name, input_rate)),
        reasoning=rates.get("reasoning", rates["output"]),
    )


def _rate(value: object, where: str) -> int:
    try:
        micro = usd_to_micro(value, where)
    except ArithmeticError:  # an exponent beyond Decimal's range (1e999999999)
        raise InvalidArgument(
            where, "must be a non-negative amount with at most 6 decimals"
        ) from None
    if micro > MAX_RATE_MICRO_USD:
        raise InvalidArgument(where, f"at most {micro_to_usd(MAX_RATE_MICRO_USD)} USD per 1M")
    return micro
