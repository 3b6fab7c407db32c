"""Price files: a real TOML file on disk extends or replaces the embedded table, and a
bad one fails with the file, the key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from budgetd.core import Usage, default_price_table
from budgetd.prices_file import PriceFileError, load_price_file


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_extends_the_defaults(tmp_path: Path) -> None:
    """A new model is priced and the embedded ones still are."""
    path = _write(tmp_path, '[models."acme-1"]\ninput = 1.5\noutput = "3"\n')
    table = load_price_file(path, default_price_table())
    assert table.cost_of(Usage(1_000_000, 1_000_000, model="acme-1-large")) == 4_500_000
    assert table.cost_of(Usage(1_000_000, 0, model="gpt-4o")) == 2_500_000


def test_file_can_override_a_default_price(tmp_path: Path) -> None:
    """An entry for an embedded model replaces its price."""
    path = _write(tmp_path, '[models."gpt-4o"]\ninput = 1\noutput = 2\ncached_input = 0.5\n')
    table = load_price_file(path, default_price_table())
    assert table.cost_of(Usage(1_000_000, 1_000_000, 1_000_000, model="gpt-4o")) == 2_500_000


def test_replace_drops_the_defaults(tmp_path: Path) -> None:
    """With replace = true only the file's models are known."""
    path = _write(tmp_path, 'replace = true\n[models."acme-1"]\ninput = 1\noutput = 1\n')
    table = load_price_file(path, default_price_table())
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
    ],
)
def test_bad_entries_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    """Every rule a price file breaks is reported as file:key: reason."""
    path = _write(tmp_path, text)
    with pytest.raises(PriceFileError) as caught:
        load_price_file(path, default_price_table())
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}:{key}: ")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    """A missing file and invalid TOML fail with the path and a reason."""
    with pytest.raises(PriceFileError, match=r"prices\.toml"):
        load_price_file(tmp_path / "prices.toml", default_price_table())
    path = _write(tmp_path, "models = [\n")
    with pytest.raises(PriceFileError, match="not valid TOML"):
        load_price_file(path, default_price_table())
