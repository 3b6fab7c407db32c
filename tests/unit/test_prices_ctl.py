"""`budgetctl prices [MODEL]` without a daemon: the command's request, its human output
(plain and on a narrow terminal) and its --json, answered by a stub that builds the
GetPrice answer from the core's `PriceTable.explain()` field for field.

The same command against a real daemon is tests/e2e/test_prices_cli.py.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from budgetd.core import PriceTable, default_price_table
from budgetd.core.prices import PriceEntry
from budgetd_client.ctl import Exit
from budgetd_client.ctl.cli import build_parser
from budgetd_client.ctl.commands import Ctl
from budgetd_client.ctl.output import Output
from budgetd_client.ctl.prices import prices
from budgetd_client.v1 import budget_pb2 as pb

SGR = re.compile(r"\x1b\[[0-9;]*m")


def model_price(entry: PriceEntry) -> pb.ModelPrice:
    price = entry.price
    return pb.ModelPrice(
        model=entry.name,
        input_micro_usd=price.input,
        output_micro_usd=price.output,
        cached_input_micro_usd=price.cached_input,
        cache_write_input_micro_usd=price.cache_write_input,
        reasoning_micro_usd=price.reasoning,
        source=entry.source,
    )


class PriceStub:
    """GetPrice as the contract describes it, from a core price table."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self.requests: list[pb.GetPriceRequest] = []

    def GetPrice(self, request: pb.GetPriceRequest, timeout: float) -> pb.GetPriceResponse:  # noqa: N802
        assert timeout == 5.0
        self.requests.append(request)
        if not request.model:
            return pb.GetPriceResponse(table=[model_price(e) for e in self.table.entries()])
        match = self.table.explain(request.model)
        answer = pb.GetPriceResponse(normalized=match.normalized, reason=match.reason)
        if match.entry is not None:
            answer.price.CopyFrom(model_price(match.entry))
        return answer


def run(
    argv: list[str], table: PriceTable | None = None, color: str = "never"
) -> tuple[int, str, PriceStub]:
    args = build_parser().parse_args(["prices", *argv])
    assert args.handler is prices
    stream = io.StringIO()
    stub = PriceStub(table or default_price_table())
    ctl = Ctl(args, Output.open(color, stream), stub, None, "unix:/nowhere", 5.0)
    return prices(ctl), stream.getvalue(), stub


def pairs(out: str) -> dict[str, str]:
    """`label  value` lines as a dict (labels are the text before two spaces)."""
    found = {}
    for line in out.splitlines():
        label, _, value = line.partition("  ")
        found[label.strip()] = value.strip()
    return found


def test_a_dated_hosted_name_shows_its_entry_match_rates_and_source() -> None:
    code, out, stub = run(["openai/GPT-4o-2024-08-06"])
    assert code == Exit.OK
    assert [r.model for r in stub.requests] == ["openai/GPT-4o-2024-08-06"]
    assert pairs(out) == {
        "model": "openai/GPT-4o-2024-08-06",
        "looked up as": "gpt-4o-2024-08-06",
        "match": 'version suffix "-2024-08-06"',
        "entry": "gpt-4o",
        "input": "$2.50 / 1M tokens",
        "cached input": "$1.25 / 1M tokens",
        "cache write": "$2.50 / 1M tokens",
        "output": "$10.00 / 1M tokens",
        "reasoning": "$10.00 / 1M tokens",
        "source": "default: openai.com/api/pricing, 2025-11",
    }


def test_an_unknown_model_says_why_and_is_not_an_error() -> None:
    table = PriceTable({"o1": default_price_table().prices["o1"]})
    code, out, _ = run(["o1-pro"], table)
    assert code == Exit.OK
    assert pairs(out) == {
        "model": "o1-pro",
        "looked up as": "o1-pro",
        "match": 'unknown: "o1-pro" is not in the table and "-pro" is not a version suffix '
        'of "o1" (nearest entries: o1)',
    }


def test_without_a_model_the_whole_table_is_listed_by_source() -> None:
    """One table per source, titled with it; every entry once, by name within its source."""
    table = default_price_table()
    code, out, stub = run([], table)
    assert code == Exit.OK
    assert stub.requests == [pb.GetPriceRequest()]
    first, *rest = out.strip().split("\n\n")
    assert first == "USD per 1M tokens, by source"
    blocks = [block.splitlines() for block in rest]
    titles = [block[0] for block in blocks]
    assert titles == sorted({entry.source for entry in table.entries()})
    header = ["MODEL", "INPUT", "CACHED", "CACHE", "WRITE", "OUTPUT", "REASONING"]
    assert all(block[1].split() == header for block in blocks)
    rows = {line.split()[0]: line.split()[1:] for block in blocks for line in block[2:]}
    assert sorted(rows) == sorted(table.prices)
    anthropic = blocks[titles.index("default: anthropic.com/pricing, 2025-11")]
    names = [line.split()[0] for line in anthropic[2:]]
    assert names == sorted(names) and "claude-3-5-sonnet" in names
    assert rows["claude-3-5-sonnet"] == ["$3.00", "$0.30", "$3.75", "$15.00", "$15.00"]
    assert rows["gemini-1.5-flash"] == ["$0.075", "$0.01875", "$0.075", "$0.30", "$0.30"]


def test_an_empty_table_says_so() -> None:
    code, out, _ = run([], PriceTable({}))
    assert (code, out) == (Exit.OK, "the price table is empty: every model is unpriced\n")


def test_json_is_the_answer_as_protojson() -> None:
    code, out, _ = run(["--json", "claude-3-5-sonnet-v2@20241022"])
    assert code == Exit.OK
    data: dict[str, Any] = json.loads(out)
    assert data == {
        "price": {
            "model": "claude-3-5-sonnet",
            "input_micro_usd": 3_000_000,
            "output_micro_usd": 15_000_000,
            "cached_input_micro_usd": 300_000,
            "cache_write_input_micro_usd": 3_750_000,
            "reasoning_micro_usd": 15_000_000,
            "source": "default: anthropic.com/pricing, 2025-11",
        },
        "normalized": "claude-3-5-sonnet-v2@20241022",
        "reason": 'version suffix "-v2@20241022"',
        "table": [],
    }
    code, out, _ = run(["--json", "nope"])
    assert "price" not in json.loads(out)  # unset: unknown


def test_a_narrow_terminal_gets_one_record_per_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 60 columns a source's table becomes `HEADER  value` records (model names whole on
    their line); at 120 it is a table."""
    monkeypatch.setenv("COLUMNS", "60")
    code, out, _ = run([], color="always")
    assert code == Exit.OK
    lines = SGR.sub("", out).splitlines()
    assert all(len(line.rstrip()) <= 60 for line in lines), out
    assert ["MODEL", "meta-llama-3.1-405b-instruct-turbo"] in [line.split() for line in lines]
    assert ["CACHE", "WRITE", "$3.75"] in [line.split() for line in lines]
    monkeypatch.setenv("COLUMNS", "120")
    wide = [line.split() for line in SGR.sub("", run([], color="always")[1]).splitlines()]
    assert ["claude-3-5-sonnet", "$3.00", "$0.30", "$3.75", "$15.00", "$15.00"] in wide
    assert ["MODEL", "meta-llama-3.1-405b-instruct-turbo"] not in wide


def test_the_command_is_registered_with_an_optional_model() -> None:
    parser = build_parser()
    assert parser.parse_args(["prices"]).model is None
    assert parser.parse_args(["prices", "gpt-4o", "--json"]).json is True
    with pytest.raises(SystemExit):
        parser.parse_args(["prices", "a", "b"])
