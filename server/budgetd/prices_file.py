"""Reading a price file: TOML that replaces or extends the embedded price table.

    replace = false            # true: use only the models below
    [models."gpt-4o"]          # a model-name prefix
    input = "2.50"             # USD per 1M input tokens
    output = "10.00"           # USD per 1M output tokens
    cached_input = "1.25"      # USD per 1M cached input tokens (default: input)

Numbers may be written bare (2.50) or quoted ("2.50"); both convert exactly to integer
micro-USD (floats are never involved: TOML floats are read as decimals).
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

from budgetd.core.errors import InvalidArgument
from budgetd.core.prices import PriceTable


class PriceFileError(Exception):
    """A price file that cannot be used: names the file, the key and the reason."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        super().__init__(f"{path}:{key}: {reason}" if key else f"{path}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


def load_price_file(path: Path, base: PriceTable) -> PriceTable:
    """`base` extended (or replaced) by the models of the TOML file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PriceFileError(path, "", error.strerror or str(error)) from None
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as error:
        raise PriceFileError(path, "", f"not valid TOML: {error}") from None
    try:
        return base.extended(data, where="prices")
    except InvalidArgument as error:
        key = error.field.removeprefix("prices.").removeprefix("prices")
        raise PriceFileError(path, key, error.rule) from None
