"""Model prices and cost arithmetic, in integer micro-USD.

Prices are per one million tokens (input, output, cached input), matched to a model name
by longest prefix, so `gpt-4o-mini-2024-07-18` finds `gpt-4o-mini` before `gpt-4o`.
A `provider/model` name (as routers spell it) falls back to the part after the last '/'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from budgetd.core.errors import InvalidArgument
from budgetd.core.policy import usd_to_micro
from budgetd.core.usage import Usage

TOKENS_PER_PRICE_UNIT = 1_000_000
_PRICE_KEYS = {"input", "output", "cached_input"}
_MAX_MODELS = 10_000
_MAX_MODEL_CHARS = 256


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-USD per one million tokens. `cached_input` defaults to `input`."""

    input: int
    output: int
    cached_input: int

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int) -> int:
        uncached = input_tokens - cached_input_tokens
        scaled = (
            uncached * self.input
            + cached_input_tokens * self.cached_input
            + output_tokens * self.output
        )
        # Round half up once, on the sum, so splitting a call never changes its cost.
        return (scaled + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT


# A model not looked up yet (None records a lookup that found nothing); compared by identity.
_UNSEEN = Price(0, 0, 0)


class PriceTable:
    """An immutable table of prices with a bounded memo of name lookups."""

    __slots__ = ("_memo", "_prices")

    _MEMO_MAX = 4096

    def __init__(self, prices: Mapping[str, Price]) -> None:
        if len(prices) > _MAX_MODELS:
            raise InvalidArgument("prices", f"at most {_MAX_MODELS} models")
        self._prices = dict(prices)
        self._memo: dict[str, Price | None] = {}

    @property
    def prices(self) -> Mapping[str, Price]:
        return self._prices

    def lookup(self, model: str) -> Price | None:
        """The price of the longest model prefix that names an entry, or None."""
        memo = self._memo
        if model in memo:
            return memo[model]
        price = self._longest_prefix(model)
        if price is None and "/" in model:
            price = self._longest_prefix(model.rsplit("/", 1)[1])
        if len(memo) >= self._MEMO_MAX:
            memo.clear()
        memo[model] = price
        return price

    def _longest_prefix(self, model: str) -> Price | None:
        prices = self._prices
        for end in range(len(model), 0, -1):
            price = prices.get(model[:end])
            if price is not None:
                return price
        return None

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
        # Price.cost, inlined (the hot path prices every request).
        cached = usage.cached_input_tokens
        scaled = (
            (usage.input_tokens - cached) * price.input
            + cached * price.cached_input
            + usage.output_tokens * price.output
        )
        return (scaled + TOKENS_PER_PRICE_UNIT // 2) // TOKENS_PER_PRICE_UNIT

    def extended(self, data: Mapping[str, Any], where: str = "prices") -> PriceTable:
        """A new table: this one plus (or, with `replace = true`, only) the given models.

        `data` is `{"replace": bool, "models": {name: {"input": "2.50", "output": "10",
        "cached_input": "1.25"}}}` with USD amounts per one million tokens.
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
        merged = {} if replace else dict(self._prices)
        for name, entry in models.items():
            merged[_model_name(name, f"{where}.models")] = parse_price(
                entry, f"{where}.models.{name}"
            )
        return PriceTable(merged)

    def to_mapping(self) -> dict[str, Any]:
        def usd(micro: int) -> str:
            return f"{micro / 1_000_000:.6f}".rstrip("0").rstrip(".")

        return {
            "replace": True,
            "models": {
                name: {
                    "input": usd(p.input),
                    "output": usd(p.output),
                    "cached_input": usd(p.cached_input),
                }
                for name, p in sorted(self._prices.items())
            },
        }


def _model_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_MODEL_CHARS:
        raise InvalidArgument(where, f"model names are 1..{_MAX_MODEL_CHARS} characters")
    return name


def parse_price(entry: object, where: str) -> Price:
    if not isinstance(entry, Mapping):
        raise InvalidArgument(where, "must be a table {input, output, cached_input}")
    unknown = sorted(set(entry) - _PRICE_KEYS)
    if unknown:
        raise InvalidArgument(
            f"{where}.{unknown[0]}", f"unknown key (known: {sorted(_PRICE_KEYS)})"
        )
    for key in ("input", "output"):
        if key not in entry:
            raise InvalidArgument(f"{where}.{key}", "required (USD per 1M tokens)")
    input_price = usd_to_micro(entry["input"], f"{where}.input")
    return Price(
        input=input_price,
        output=usd_to_micro(entry["output"], f"{where}.output"),
        cached_input=usd_to_micro(
            entry.get("cached_input", entry["input"]), f"{where}.cached_input"
        )
        if "cached_input" in entry
        else input_price,
    )
