"""Fuzz the price file reader: a PriceTable, or a PriceFileError naming file, key, reason.

Goal: a price file (budgetd's TOML, or LiteLLM's JSON) of any content is either
loaded or refused with the one typed error that names the file, the key (when the
file parsed: the model and the field) and the reason; never another exception, and a
loaded table prices every one of its models with exact integers.

Method: random bytes and text under each suffix (`.toml`, `.json`, none: sniffed), and
well-formed documents of both formats over real and hostile model names with hostile
prices (negative, huge, finer than 1e-12, exponents, NaN and Infinity literals,
strings, booleans, tables), through `prices_file.load_price_file`.
"""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from budgetd.core import default_price_table
from budgetd.prices_file import PriceFileError, load_price_file
from tests.fuzz.counts import COUNTS
from tests.fuzz.profile import fuzz
from tests.fuzz.strategies import MODELS, text
from tests.fuzz.toml_text import Raw, document, parses, scalars, shown

EXAMPLES = 600
BASE = default_price_table()
RATE_FIELDS = ("input", "output", "cached_input", "cache_write_input", "reasoning", "x")
LITELLM_FIELDS = (
    "input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
    "cache_creation_input_token_cost", "output_cost_per_reasoning_token", "litellm_provider",
    "mode",
)  # fmt: skip
NAMES = st.sampled_from((*MODELS, "sample_spec", "azure/gpt-4o", "a/", "/", "x" * 300)) | text()
AMOUNTS = st.sampled_from(("2.50", "0", "-1", "1e999", "0.0000001", "1000001", "abc", ""))
PER_TOKEN = st.one_of(
    st.sampled_from(("2.5e-06", "1e-13", "-1e-6", "1.0000001", "1e999999999", "0", "3e-07")).map(
        Decimal
    ),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.sampled_from(("2.5e-06", "free")),
)


def _toml_document() -> st.SearchStrategy[dict[str, Any]]:
    rate = st.one_of(AMOUNTS, AMOUNTS.filter(bool).map(Raw), scalars())
    entry = st.dictionaries(st.sampled_from(RATE_FIELDS), rate, max_size=6) | scalars()
    return st.fixed_dictionaries(
        {},
        optional={
            "replace": st.booleans() | scalars(),
            "models": st.dictionaries(NAMES, entry, max_size=5) | scalars(),
            "other": scalars(),
        },
    )


def _litellm_text() -> st.SearchStrategy[str]:
    entry = st.dictionaries(st.sampled_from(LITELLM_FIELDS), PER_TOKEN, max_size=7)
    data: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
        NAMES, entry | st.integers() | st.just([]), max_size=6
    )
    raw = data.map(lambda d: json.dumps(d, default=str, allow_nan=True))
    odd = st.sampled_from(('{"m": {"input_cost_per_token": NaN, "output_cost_per_token": 1}}',
                           '{"m": {"input_cost_per_token": Infinity}}', "[]", "7", '"x"',
                           "{" * 10_000, '{"m": 1e999999999}'))  # fmt: skip
    return st.one_of(raw, odd)


def _check(path: Path, parsed: bool) -> None:
    try:
        table = load_price_file(path, BASE)
    except PriceFileError as error:
        COUNTS.record("price file", f"{path.suffix or 'no suffix'}: PriceFileError")
        assert error.path == path and error.reason, error
        if parsed and "entries" not in error.reason and "models" not in error.reason:
            assert error.key, f"a file that parsed blamed as a whole: {error}"
        return
    COUNTS.record("price file", f"{path.suffix or 'no suffix'}: loaded")
    for entry in table.entries():
        price = entry.price
        rates = (price.input, price.output, price.cached_input, price.cache_write_input)
        assert all(isinstance(r, int) and r >= 0 for r in (*rates, price.reasoning)), entry


@fuzz(EXAMPLES)
@given(data=st.data())
def _fuzz_price_file(data: st.DataObject) -> None:
    suffix = data.draw(st.sampled_from((".toml", ".json", "")), label="suffix")
    kind = data.draw(st.sampled_from(("toml", "litellm", "text", "bytes")), label="kind")
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / f"prices{suffix}"
        parsed = False
        if kind == "bytes":
            path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
        else:
            if kind == "toml":
                content = data.draw(_toml_document().map(document), label="toml")
                parsed = suffix != ".json" and parses(content)
            elif kind == "litellm":
                content = data.draw(_litellm_text(), label="json")
            else:
                content = data.draw(st.text(max_size=200), label="text")
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            _check(path, parsed)
        except AssertionError:
            raise
        except Exception as error:  # the finding: anything but PriceFileError
            shown_content = shown(path.read_bytes().decode("utf-8", "replace"))
            raise AssertionError(f"{type(error).__name__}: {error} for {shown_content}") from error


def test_any_price_file_is_a_table_or_a_price_file_error_naming_file_key_and_reason() -> None:
    _fuzz_price_file()
