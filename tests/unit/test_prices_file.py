"""Price files: a real TOML or LiteLLM-JSON file on disk extends or replaces the embedded
table, converts exactly to integer micro-USD, and a bad one fails with the file, the key
and the reason — never with another exception, whatever the file holds (fuzzed)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetd import prices_file
from budgetd.core import Price, PriceTable, Usage, default_price_table
from budgetd.prices_file import PriceFileError, load_price_file

DEFAULTS = default_price_table()

# A few entries in the shape of LiteLLM's model_prices_and_context_window.json (its keys,
# value types and spellings), with the prices of the vendors' pages.
LITELLM_SAMPLE = """{
    "sample_spec": {
        "input_cost_per_token": 0.0,
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "max_input_tokens": "max input tokens, if the provider specifies it",
        "mode": "one of: chat, embedding, completion, image_generation",
        "output_cost_per_reasoning_token": 0.0,
        "output_cost_per_token": 0.0,
        "supports_function_calling": true
    },
    "256-x-256/dall-e-2": {
        "input_cost_per_pixel": 2.4414e-07,
        "litellm_provider": "openai",
        "mode": "image_generation",
        "output_cost_per_pixel": 0.0
    },
    "gpt-4o": {
        "cache_read_input_token_cost": 1.25e-06,
        "input_cost_per_token": 2.5e-06,
        "input_cost_per_token_batches": 1.25e-06,
        "litellm_provider": "openai",
        "max_input_tokens": 128000,
        "max_output_tokens": 16384,
        "max_tokens": 16384,
        "mode": "chat",
        "output_cost_per_token": 1e-05,
        "search_context_cost_per_query": {
            "search_context_size_high": 0.05,
            "search_context_size_low": 0.03
        },
        "supports_prompt_caching": true,
        "supports_vision": true
    },
    "azure/gpt-4o": {
        "cache_read_input_token_cost": 1.25e-06,
        "input_cost_per_token": 2.75e-06,
        "litellm_provider": "azure",
        "mode": "chat",
        "output_cost_per_token": 1.1e-05
    },
    "openrouter/openai/gpt-4o": {
        "input_cost_per_token": 2.5e-06,
        "litellm_provider": "openrouter",
        "mode": "chat",
        "output_cost_per_token": 1e-05
    },
    "o3-pro": {
        "input_cost_per_token": 2e-05,
        "litellm_provider": "openai",
        "mode": "responses",
        "output_cost_per_reasoning_token": 8e-05,
        "output_cost_per_token": 8e-05,
        "supports_reasoning": true
    },
    "claude-3-5-sonnet-20241022": {
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_read_input_token_cost": 3e-07,
        "input_cost_per_token": 3e-06,
        "litellm_provider": "anthropic",
        "max_input_tokens": 200000,
        "max_output_tokens": 8192,
        "max_tokens": 8192,
        "mode": "chat",
        "output_cost_per_token": 1.5e-05,
        "supports_assistant_prefill": true,
        "tool_use_system_prompt_tokens": 159
    },
    "anthropic.claude-3-haiku-20240307-v1:0": {
        "input_cost_per_token": 2.5e-07,
        "litellm_provider": "bedrock",
        "mode": "chat",
        "output_cost_per_token": 1.25e-06
    },
    "us.anthropic.claude-3-haiku-20240307-v1:0": {
        "input_cost_per_token": 2.6e-07,
        "litellm_provider": "bedrock",
        "mode": "chat",
        "output_cost_per_token": 1.3e-06
    },
    "gemini/gemini-1.5-flash": {
        "cache_read_input_token_cost": 1.875e-08,
        "input_cost_per_token": 7.5e-08,
        "litellm_provider": "gemini",
        "mode": "chat",
        "output_cost_per_token": 3e-07
    },
    "amazon.nova-2-pro-preview-20251202-v1:0": {
        "cache_read_input_token_cost": 5.46875e-07,
        "input_cost_per_token": 2.1875e-06,
        "litellm_provider": "bedrock_converse",
        "mode": "chat",
        "output_cost_per_token": 1.75e-05
    },
    "text-embedding-3-small": {
        "input_cost_per_token": 2e-08,
        "litellm_provider": "openai",
        "mode": "embedding",
        "output_cost_per_token": 0,
        "output_vector_size": 1536
    },
    "whisper-1": {
        "input_cost_per_second": 0.0001,
        "litellm_provider": "openai",
        "mode": "audio_transcription",
        "output_cost_per_second": 0.0001
    }
}
"""


def _write(tmp_path: Path, text: str, name: str = "prices.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- TOML ----------------------------------------------------------------------------------


def test_file_extends_the_defaults(tmp_path: Path) -> None:
    """A new model is priced, with a version suffix too, and the embedded ones still are."""
    path = _write(tmp_path, '[models."acme-1"]\ninput = 1.5\noutput = "3"\n')
    table = load_price_file(path, DEFAULTS)
    assert table.cost_of(Usage(1_000_000, 1_000_000, model="acme-1-2025-01-01")) == 4_500_000
    assert table.cost_of(Usage(1_000_000, 1_000_000, model="acme-1-large")) is None
    assert table.cost_of(Usage(1_000_000, 0, model="gpt-4o")) == 2_500_000
    match = table.explain("ACME-1")
    assert match.entry is not None and match.entry.source == str(path)


def test_file_can_override_a_default_price(tmp_path: Path) -> None:
    """An entry for an embedded model (in any spelling) replaces its price."""
    path = _write(tmp_path, '[models."openai/GPT-4o"]\ninput = 1\noutput = 2\ncached_input = 0.5\n')
    table = load_price_file(path, DEFAULTS)
    assert table.cost_of(Usage(1_000_000, 1_000_000, 1_000_000, model="gpt-4o")) == 2_500_000


def test_toml_takes_cache_write_and_reasoning_rates(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[models."acme-think"]\ninput = "1"\noutput = "2"\ncached_input = "0.1"\n'
        'cache_write_input = "1.5"\nreasoning = "8"\n'
        '[models."claude-acme"]\ninput = "2"\noutput = "10"\n',
    )
    table = load_price_file(path, DEFAULTS)
    assert table.prices["acme-think"] == Price(1_000_000, 2_000_000, 100_000, 1_500_000, 8_000_000)
    # Unset: cached at input, cache write at Anthropic's 1.25 x for a Claude model,
    # reasoning at output.
    assert table.prices["claude-acme"] == Price(2_000_000, 10_000_000, 2_000_000, 2_500_000, 10**7)


def test_replace_drops_the_defaults(tmp_path: Path) -> None:
    """With replace = true only the file's models are known."""
    path = _write(tmp_path, 'replace = true\n[models."acme-1"]\ninput = 1\noutput = 1\n')
    table = load_price_file(path, DEFAULTS)
    assert table.cost_of(Usage(10, 10, model="gpt-4o")) is None
    assert list(table.prices) == ["acme-1"]


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[models."m"]\noutput = 1\n', "models.m.input", "required"),
        ('[models."m"]\ninput = -1\noutput = 1\n', "models.m.input", "non-negative"),
        ('[models."m"]\ninput = 1\noutput = 1\nwat = 2\n', "models.m.wat", "unknown key"),
        ("colour = 1\n", "colour", "unknown key"),
        ("replace = 3\n", "replace", "true or false"),
        ('[models."m"]\ninput = "0.0000001"\noutput = 1\n', "models.m.input", "6 decimals"),
        ('[models."m"]\ninput = 1\noutput = nan\n', "models.m.output", "non-negative"),
        ('[models."m"]\ninput = 1\noutput = 1e999999999\n', "models.m.output", "6 decimals"),
        ('[models."m"]\ninput = 1\noutput = 1\nreasoning = 2e6\n', "models.m.reasoning", "at most"),
        (
            '[models."a/m"]\ninput = 1\noutput = 1\n[models."M"]\ninput = 1\noutput = 1\n',
            "models.M",
            "same model",
        ),
    ],
)
def test_bad_entries_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    """Every rule a price file breaks is reported as file:key: reason."""
    path = _write(tmp_path, text)
    with pytest.raises(PriceFileError) as caught:
        load_price_file(path, DEFAULTS)
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}:{key}: ")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    """A missing file, invalid TOML and bytes that are not UTF-8 fail with the path."""
    with pytest.raises(PriceFileError, match=r"prices\.toml"):
        load_price_file(tmp_path / "prices.toml", DEFAULTS)
    path = _write(tmp_path, "models = [\n")
    with pytest.raises(PriceFileError, match="not valid TOML"):
        load_price_file(path, DEFAULTS)
    path.write_bytes(b'[models."m"]\ninput = "\xff"\n')
    with pytest.raises(PriceFileError, match="not UTF-8"):
        load_price_file(path, DEFAULTS)
    deep = _write(tmp_path, "x = " + "[" * 100_000)
    with pytest.raises(PriceFileError, match="not valid TOML"):
        load_price_file(deep, DEFAULTS)


def test_the_file_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, '[models."m"]\ninput = 1\noutput = 1\n')
    monkeypatch.setattr(prices_file, "MAX_PRICE_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(PriceFileError, match="larger than"):
        load_price_file(path, DEFAULTS)
    monkeypatch.setattr(prices_file, "MAX_PRICE_FILE_BYTES", path.stat().st_size)
    assert "m" in load_price_file(path, DEFAULTS).prices


# --- LiteLLM JSON --------------------------------------------------------------------------


def test_litellm_json_converts_per_token_costs_exactly(tmp_path: Path) -> None:
    path = _write(tmp_path, LITELLM_SAMPLE, "model_prices_and_context_window.json")
    table = load_price_file(path, PriceTable({}))
    assert table.prices["gpt-4o"] == Price(2_500_000, 10_000_000, 1_250_000, 2_500_000, 10**7)
    assert table.prices["o3-pro"] == Price(
        20 * 10**6, 80 * 10**6, 20 * 10**6, 20 * 10**6, 80 * 10**6
    )
    # Anthropic's cache write as given; Bedrock's Claude without one: 1.25 x input.
    assert table.prices["claude-3-5-sonnet-20241022"] == Price(
        3_000_000, 15_000_000, 300_000, 3_750_000, 15_000_000
    )
    assert table.prices["claude-3-haiku-20240307-v1:0"] == Price(
        250_000, 1_250_000, 250_000, 312_500, 1_250_000
    )
    assert table.prices["gemini-1.5-flash"] == Price(75_000, 300_000, 18_750, 75_000, 300_000)
    assert table.prices["nova-2-pro-preview-20251202-v1:0"].cached_input == 546_875
    assert table.prices["nova-2-pro-preview-20251202-v1:0"].input == 2_187_500
    assert table.prices["text-embedding-3-small"] == Price(20_000, 0, 20_000, 20_000, 0)
    # No token prices (image, audio-seconds) and sample_spec: skipped.
    assert sorted(table.prices) == [
        "claude-3-5-sonnet-20241022",
        "claude-3-haiku-20240307-v1:0",
        "gemini-1.5-flash",
        "gpt-4o",
        "nova-2-pro-preview-20251202-v1:0",
        "o3-pro",
        "text-embedding-3-small",
    ]
    assert all(type(p.input) is int for p in table.prices.values())


def test_litellm_spellings_of_one_model_keep_the_shortest_key(tmp_path: Path) -> None:
    """gpt-4o beats azure/gpt-4o and openrouter/openai/gpt-4o; Bedrock's plain id beats
    its us. profile; the source names the file, and the key when it was not the name."""
    path = _write(tmp_path, LITELLM_SAMPLE, "litellm.json")
    table = load_price_file(path, DEFAULTS)
    assert table.lookup("azure/gpt-4o") == table.prices["gpt-4o"]
    assert table.prices["gpt-4o"].input == 2_500_000  # not Azure's 2.75
    haiku = table.explain("us.anthropic.claude-3-haiku-20240307-v1:0")
    assert haiku.entry is not None
    assert haiku.entry.price.input == 250_000  # not the us. profile's 0.26
    assert haiku.entry.source == f"{path} (anthropic.claude-3-haiku-20240307-v1:0)"
    gpt = table.explain("gpt-4o-2024-08-06")
    assert gpt.entry is not None and gpt.entry.source == str(path)
    # The file extends the defaults: an embedded model it does not list is still priced.
    assert table.lookup("o1") == DEFAULTS.prices["o1"]
    assert (
        table.lookup("claude-3-5-sonnet-20241022-v2:0")
        == (table.prices["claude-3-5-sonnet-20241022"])
    )


def test_json_is_chosen_by_suffix_or_by_content(tmp_path: Path) -> None:
    entry = '{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}'
    for name in ("prices", "prices.txt", "PRICES.JSON"):
        assert load_price_file(_write(tmp_path, entry, name), PriceTable({})).prices["m"] == (
            Price(1_000_000, 2_000_000, 1_000_000, 1_000_000, 2_000_000)
        )
    with pytest.raises(PriceFileError, match="not valid TOML"):  # .toml is TOML, always
        load_price_file(_write(tmp_path, entry, "prices.toml"), PriceTable({}))
    with pytest.raises(PriceFileError, match="not valid JSON"):
        load_price_file(_write(tmp_path, "[models]\n", "prices.json"), PriceTable({}))


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ('"m": "cheap"', "m", "must be an object"),
        ('"m": {"input_cost_per_token": "1e-06", "output_cost_per_token": 0}', "m.input", "number"),
        ('"m": {"input_cost_per_token": true, "output_cost_per_token": 0}', "m.input", "number"),
        ('"m": {"input_cost_per_token": -1e-06, "output_cost_per_token": 0}', "m.in", "negative"),
        ('"m": {"input_cost_per_token": 1e-13, "output_cost_per_token": 0}', "m.input", "finer"),
        ('"m": {"input_cost_per_token": 2, "output_cost_per_token": 0}', "m.input", "more than"),
        ('"m": {"input_cost_per_token": 1e999999999, "output_cost_per_token": 0}', "m.in", "more"),
        (
            '"m": {"input_cost_per_token": 0, "output_cost_per_token": 0, '
            '"cache_read_input_token_cost": null}',
            "m.cache_read_input_token_cost",
            "number",
        ),
        ('"openai/": {"input_cost_per_token": 0, "output_cost_per_token": 0}', "openai/", "no"),
    ],
)
def test_bad_litellm_entries_name_file_key_and_reason(
    tmp_path: Path, entry: str, key: str, reason: str
) -> None:
    path = _write(tmp_path, "{" + entry + "}", "prices.json")
    with pytest.raises(PriceFileError) as caught:
        load_price_file(path, DEFAULTS)
    assert caught.value.key.startswith(key)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}:{caught.value.key}: ")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"m": {"input_cost_per_token": NaN, "output_cost_per_token": 0}}', "not valid JSON"),
        ('{"m": {"input_cost_per_token": Infinity}}', "not valid JSON"),
        ("{" * 100_000, "not valid JSON"),
        ('{"m": ' + "1" * 5_000 + "}", "not valid JSON"),  # past int's digit limit
    ],
)
def test_malformed_json_files(tmp_path: Path, text: str, reason: str) -> None:
    path = _write(tmp_path, text, "prices.json")
    with pytest.raises(PriceFileError) as caught:
        load_price_file(path, DEFAULTS)
    assert reason in caught.value.reason


def test_json_entry_count_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = {f"m{i}": {"input_cost_per_token": 0, "output_cost_per_token": 0} for i in range(3)}
    path = _write(tmp_path, json.dumps(entries), "prices.json")
    monkeypatch.setattr(prices_file, "MAX_PRICE_FILE_ENTRIES", 2)
    with pytest.raises(PriceFileError, match="more than 2 entries"):
        load_price_file(path, DEFAULTS)
    monkeypatch.setattr(prices_file, "MAX_PRICE_FILE_ENTRIES", 3)
    assert {"m0", "m1", "m2"} <= set(load_price_file(path, DEFAULTS).prices)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the files of property tests (hypothesis reruns a test body many
    times within one function-scoped fixture's life; each example overwrites its file)."""
    return tmp_path_factory.mktemp("price-files")


@settings(database=None, max_examples=200, deadline=None)
@given(st.decimals(min_value=0, max_value=1, places=12, allow_nan=False, allow_infinity=False))
def test_per_token_costs_of_twelve_decimals_convert_exactly(scratch: Path, cost: Decimal) -> None:
    """Any cost with at most 12 decimals is cost x 10^12 micro-USD per 1M, as an int."""
    text = json.dumps({"m": {"input_cost_per_token": "X", "output_cost_per_token": 0}})
    path = scratch / "exact.json"
    path.write_text(text.replace('"X"', format(cost, "f")), encoding="utf-8")
    price = load_price_file(path, PriceTable({})).prices["m"]
    assert price.input == int(cost * 10**12)
    assert Decimal(price.input) == cost * 10**12


# --- fuzz: any file is a table or a PriceFileError -----------------------------------------


def _load_only_price_file_errors(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        table = load_price_file(path, DEFAULTS)
    except PriceFileError as error:
        assert str(error).startswith(str(path))
        return
    assert isinstance(table, PriceTable)
    for price in table.prices.values():
        assert all(type(rate) is int and rate >= 0 for rate in (price.input, price.output))


_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=10)
_NUMBERS = (
    st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-06, 2.5e-06, 1e-13, 1e300, -0.0, 5.46875e-07, 0.30, 15])
)
_SCALARS = st.none() | st.booleans() | _NUMBERS | _TEXT
_FIELDS = st.sampled_from(
    [
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "output_cost_per_reasoning_token",
        "mode",
        "litellm_provider",
        "input",
        "output",
        "cached_input",
        "cache_write_input",
        "reasoning",
        "replace",
        "models",
    ]
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_FIELDS | _TEXT, inner, max_size=4),
    max_leaves=20,
)
# Mostly entries of the right shape with wrong, odd or right values, so the checks past
# the parser are reached too.
_TOML_RATE = st.decimals(min_value=-1, max_value=2_000_000, places=7) | _NUMBERS | _TEXT
_TOML_PRICES = st.fixed_dictionaries(
    {"input": _TOML_RATE, "output": _TOML_RATE},
    optional={key: _TOML_RATE for key in ("cached_input", "cache_write_input", "reasoning")},
)
_JSON_RATE = st.floats(min_value=-1e-6, max_value=2.0) | _NUMBERS
_JSON_PRICES = st.fixed_dictionaries(
    {"input_cost_per_token": _JSON_RATE, "output_cost_per_token": _JSON_RATE},
    optional={
        "cache_read_input_token_cost": _JSON_RATE,
        "cache_creation_input_token_cost": _JSON_RATE,
        "output_cost_per_reasoning_token": _JSON_RATE,
        "mode": st.sampled_from(["chat", "embedding", "image_generation"]),
        "litellm_provider": _TEXT,
    },
)
_ENTRIES = (
    _JSON_PRICES
    | _TOML_PRICES
    | st.dictionaries(_FIELDS, _NUMBERS | _SCALARS, max_size=6)
    | _VALUES
)
_MODEL_NAMES = (
    st.sampled_from(["gpt-4o", "openai/", "", "a/b/c", "us.anthropic.x", "sample_spec", "M"])
    | _TEXT
)
_DOCUMENTS = st.dictionaries(_MODEL_NAMES, _ENTRIES, max_size=5)


@settings(
    database=None, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(_DOCUMENTS)
def test_fuzz_json_documents(scratch: Path, document: dict[str, object]) -> None:
    """Random LiteLLM-like JSON: a table or a PriceFileError, nothing else."""
    _load_only_price_file_errors(scratch / "fuzz.json", json.dumps(document, default=str))


@settings(
    database=None, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.dictionaries(_MODEL_NAMES, _ENTRIES, max_size=4), st.booleans())
def test_fuzz_toml_documents(scratch: Path, models: dict[str, object], replace: bool) -> None:
    """Random price-file-like TOML (written as JSON-ish inline values): a table or a
    PriceFileError, nothing else."""
    lines = [f"replace = {str(replace).lower()}"]
    for name, value in models.items():
        lines.append(f"[models.{_toml_string(name)}]")
        if isinstance(value, dict):
            lines += [f"{_toml_string(str(k))} = {_toml_value(v)}" for k, v in value.items()]
    _load_only_price_file_errors(scratch / "fuzz.toml", "\n".join(lines) + "\n")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_string(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that astral characters must
    stay literal (JSON writes them as surrogate pairs, which TOML refuses)."""
    return json.dumps(text, ensure_ascii=False)


@settings(
    database=None, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.sampled_from(["fuzz.json", "fuzz.toml", "fuzz"]),
    st.text(alphabet='{}[]":,=.\n -e0123456789abcinputotk_"\\', max_size=200)
    | st.binary(max_size=200),
)
def test_fuzz_raw_text(scratch: Path, name: str, content: str | bytes) -> None:
    """Arbitrary text and bytes under each suffix: a table or a PriceFileError."""
    _load_only_price_file_errors(scratch / name, content)
