"""Reading a price file that replaces or extends the embedded price table.

Two formats, chosen by the file's suffix (`.json` or `.toml`), else by its first
character (`{` is JSON: no TOML document starts with one):

TOML, budgetd's own, USD per one million tokens:

    replace = false            # true: use only the models below
    [models."gpt-4o"]          # a model name (normalised: see budgetd.core.prices)
    input = "2.50"             # uncached input tokens
    output = "10.00"           # output tokens (reasoning excluded)
    cached_input = "1.25"      # prompt-cache reads (default: input)
    cache_write_input = "2.50" # prompt-cache writes (default: 1.25 x input for Claude
                               # models, Anthropic's rate; input for the others)
    reasoning = "10.00"        # reasoning tokens (default: output)

Numbers may be written bare (2.50) or quoted ("2.50"); both convert exactly to integer
micro-USD (floats are never involved: TOML floats are read as decimals).

JSON in the shape of LiteLLM's `model_prices_and_context_window.json`: one object per
model with per-token USD costs (`input_cost_per_token`, `output_cost_per_token`,
`cache_read_input_token_cost`, `cache_creation_input_token_cost`,
`output_cost_per_reasoning_token`). Its models extend the embedded table. Entries without
both token costs (image, audio and per-request models) and `sample_spec` are skipped;
every other key of an entry (`litellm_provider`, `mode`, context sizes, ...) is ignored.
Costs are read as decimals and multiplied by 10^12 into micro-USD per million tokens, so
2.5e-06 is exactly 2,500,000; a cost finer than that (1e-12 USD per token) is an error,
not rounded. Keys that normalise to the same model (`gpt-4o`, `azure/gpt-4o`,
`openrouter/openai/gpt-4o`) are one entry: the shortest key wins, then the first.
"""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from budgetd.core.errors import InvalidArgument
from budgetd.core.prices import (
    MAX_MODEL_CHARS,
    MAX_RATE_MICRO_USD,
    Price,
    PriceTable,
    default_cache_write,
    normalise_model,
)

MAX_PRICE_FILE_BYTES = 16 * 1024 * 1024  # LiteLLM's file is about 1.6 MB
MAX_PRICE_FILE_ENTRIES = 20_000  # keys of a JSON file (LiteLLM's has a few thousand)
# USD per token -> micro-USD per million tokens.
_PER_TOKEN_SCALE = Decimal(10) ** 12
_MAX_PER_TOKEN = Decimal(MAX_RATE_MICRO_USD) / _PER_TOKEN_SCALE  # 1 USD per token
_SKIPPED_KEYS = frozenset({"sample_spec"})
_SHOWN_KEY_CHARS = 80


class PriceFileError(Exception):
    """A price file that cannot be used: names the file, the key and the reason."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        super().__init__(f"{path}:{key}: {reason}" if key else f"{path}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


def load_price_file(path: Path, base: PriceTable) -> PriceTable:
    """`base` extended (or, for TOML with `replace = true`, replaced) by the file's models."""
    text = _read(path)
    if path.suffix.lower() == ".json" or (
        path.suffix.lower() != ".toml" and text.lstrip().startswith("{")
    ):
        return _load_litellm(path, text, base)
    return _load_toml(path, text, base)


def _read(path: Path) -> str:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_PRICE_FILE_BYTES + 1)
    except OSError as error:
        raise PriceFileError(path, "", error.strerror or str(error)) from None
    if len(raw) > MAX_PRICE_FILE_BYTES:
        raise PriceFileError(path, "", f"larger than {MAX_PRICE_FILE_BYTES:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PriceFileError(path, "", f"not UTF-8 text (byte {error.start})") from None


def _load_toml(path: Path, text: str, base: PriceTable) -> PriceTable:
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as error:  # TOMLDecodeError is a ValueError
        raise PriceFileError(path, "", f"not valid TOML: {error}") from None
    try:
        return base.extended(data, where="prices", source=str(path))
    except InvalidArgument as error:
        key = error.field.removeprefix("prices.").removeprefix("prices")
        raise PriceFileError(path, key, error.rule) from None


def _load_litellm(path: Path, text: str, base: PriceTable) -> PriceTable:
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise PriceFileError(path, "", f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise PriceFileError(path, "", "must be a JSON object of model name -> prices")
    if len(data) > MAX_PRICE_FILE_ENTRIES:
        raise PriceFileError(path, "", f"more than {MAX_PRICE_FILE_ENTRIES:,} entries")
    chosen: dict[str, tuple[str, Price]] = {}
    for key, entry in data.items():
        price = _litellm_price(path, key, entry)
        if price is None:
            continue
        name = normalise_model(key)
        if not name:
            raise PriceFileError(path, _shown(key), "no model name once its prefix is removed")
        kept = chosen.get(name)
        if kept is None or len(key) < len(kept[0]):
            chosen[name] = (key, price)
    prices = {name: price for name, (_, price) in chosen.items()}
    sources = {
        name: str(path) if key == name else f"{path} ({key})" for name, (key, _) in chosen.items()
    }
    try:
        return base.merged(prices, sources)
    except InvalidArgument as error:  # too many models for one table
        raise PriceFileError(path, "", error.rule) from None


def _litellm_price(path: Path, key: str, entry: object) -> Price | None:
    """The Price of one LiteLLM entry, or None for one without token prices."""
    if key in _SKIPPED_KEYS:
        return None
    where = _shown(key)
    if not isinstance(entry, dict):
        raise PriceFileError(path, where, "must be an object of prices")
    if "input_cost_per_token" not in entry or "output_cost_per_token" not in entry:
        return None
    if len(key) > MAX_MODEL_CHARS:
        raise PriceFileError(path, where, f"model names are 1..{MAX_MODEL_CHARS} characters")

    def rate(field: str, default: int) -> int:
        return default if field not in entry else _per_token(path, where, field, entry[field])

    input_rate = rate("input_cost_per_token", 0)
    output_rate = rate("output_cost_per_token", 0)
    return Price(
        input=input_rate,
        output=output_rate,
        cached_input=rate("cache_read_input_token_cost", input_rate),
        cache_write_input=rate(
            "cache_creation_input_token_cost", default_cache_write(key, input_rate)
        ),
        reasoning=rate("output_cost_per_reasoning_token", output_rate),
    )


def _per_token(path: Path, key: str, field: str, value: Any) -> int:
    """A per-token USD cost as exact micro-USD per million tokens."""
    where = f"{key}.{field}"
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise PriceFileError(path, where, "must be a number (USD per token)")
    amount = Decimal(value)
    # Checked before scaling: an exponent like 1e999999999 would overflow the product.
    if not amount.is_finite() or amount < 0:
        raise PriceFileError(path, where, "must be a non-negative number (USD per token)")
    if amount > _MAX_PER_TOKEN:
        raise PriceFileError(path, where, f"more than {_MAX_PER_TOKEN} USD per token")
    micro = amount * _PER_TOKEN_SCALE
    if micro != micro.to_integral_value():
        raise PriceFileError(
            path, where, f"{value} is finer than 1e-12 USD per token (1 micro-USD per 1M)"
        )
    return int(micro)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a price")


def _shown(key: str) -> str:
    """A key for an error message: long ones are cut (a file may hold any key)."""
    return key if len(key) <= _SHOWN_KEY_CHARS else key[:_SHOWN_KEY_CHARS] + "..."
