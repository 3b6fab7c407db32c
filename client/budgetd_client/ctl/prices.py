"""`budgetctl prices [MODEL]`: how the daemon prices a model, or its whole price table.

One GetPrice call. With MODEL: the name as the daemon looked it up (lower case, provider
prefix removed), the entry it resolves to and why (`exact`, `version suffix
"-2024-07-18"`), or why it is unknown; then the five rates and where they come from.
Without MODEL: every entry, one table per source, by name. Rates are USD per one million
tokens. An unknown model is an answer, not an error (exit 0): usage of it is recorded
with cost unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

from budgetd_client.ctl import formats as fmt
from budgetd_client.ctl.commands import Ctl
from budgetd_client.ctl.errors import Exit
from budgetd_client.ctl.output import Cell, Column, message_dict
from budgetd_client.v1 import budget_pb2 as pb

# (label, ModelPrice field): the order a bill reads in.
RATES = (
    ("input", "input_micro_usd"),
    ("cached input", "cached_input_micro_usd"),
    ("cache write", "cache_write_input_micro_usd"),
    ("output", "output_micro_usd"),
    ("reasoning", "reasoning_micro_usd"),
)
TABLE_COLUMNS = (
    Column("MODEL", whole=True),
    Column("INPUT", numeric=True),
    Column("CACHED", numeric=True),
    Column("CACHE WRITE", numeric=True),
    Column("OUTPUT", numeric=True),
    Column("REASONING", numeric=True),
)


def prices(ctl: Ctl) -> int:
    model: str = ctl.args.model or ""
    answer: pb.GetPriceResponse = ctl.budget.GetPrice(
        pb.GetPriceRequest(model=model), timeout=ctl.timeout
    )
    if ctl.json:
        ctl.out.json(message_dict(answer))
    elif model:
        _show_match(ctl, model, answer)
    elif answer.table:
        _show_table(ctl, answer.table)
    else:
        ctl.out.line("the price table is empty: every model is unpriced")
    return Exit.OK


def _show_table(ctl: Ctl, entries: Sequence[pb.ModelPrice]) -> None:
    """One table per source (a pricing page, or a price file), so the long source is a
    title rather than a column, and the rates fit a terminal."""
    by_source: dict[str, list[pb.ModelPrice]] = {}
    for entry in entries:
        by_source.setdefault(entry.source, []).append(entry)
    ctl.out.line("USD per 1M tokens, by source")
    for source in sorted(by_source):
        ctl.out.line()
        rows = [_row(entry) for entry in by_source[source]]
        ctl.out.table(TABLE_COLUMNS, rows, source or "no source")


def _show_match(ctl: Ctl, model: str, answer: pb.GetPriceResponse) -> None:
    known = answer.HasField("price")
    rows: list[tuple[str, Cell | str]] = [
        ("model", Cell(model, whole=True)),
        ("looked up as", Cell(answer.normalized or "-", whole=True)),
        ("match", Cell(answer.reason, style="" if known else "yellow")),
    ]
    if known:
        price = answer.price
        rows.append(("entry", Cell(price.model, whole=True)))
        rows += [(label, f"{fmt.usd(getattr(price, field))} / 1M tokens") for label, field in RATES]
        rows.append(("source", price.source or "-"))
    ctl.out.pairs(rows)


def _row(entry: pb.ModelPrice) -> Sequence[Cell | str]:
    return [entry.model, *(fmt.usd(getattr(entry, field)) for _, field in RATES)]
