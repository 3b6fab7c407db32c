"""Where budgetctl's answers go: rich tables on a terminal, plain aligned text in a pipe.

Commands describe what to show (columns, rows, label/value pairs, lines with a style)
and never test for a terminal themselves. Plain text has no escape codes at all, so
`budgetctl status | grep exhausted` and log files stay clean; `--json` bypasses both.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell or a value: its text, and a rich style used only on a terminal."""

    text: str
    style: str = ""
    # An identifier an operator copies into another command (`ledger KEY`, `reset KEY`):
    # never wrapped or cut on a terminal, whatever its width.
    whole: bool = False


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    numeric: bool = False  # right-aligned
    whole: bool = False  # every cell is an identifier to copy (see Cell.whole)


Value = str | Cell

# A width no table reaches: measuring at it gives a table's own minimum width.
_UNBOUNDED = 1_000_000


def _cell(value: Value) -> Cell:
    return value if isinstance(value, Cell) else Cell(value)


def _text(cell: Cell) -> Text:
    if cell.whole:
        return Text(cell.text, style=cell.style, no_wrap=True, overflow="ignore")
    return Text(cell.text, style=cell.style)


def _min_width(texts: Sequence[str], whole: bool) -> int:
    """The narrowest a column may get on a terminal: its longest text if it is whole,
    else its longest word (other text wraps between words, never inside one)."""
    if whole:
        return max((cell_len(text) for text in texts), default=0)
    return max((cell_len(word) for text in texts for word in text.split()), default=0)


def message_dict(message: Message) -> dict[str, Any]:
    """A message as ProtoJSON with the .proto field names. Fields without presence are
    kept at their default (a script can rely on `reserved` being there); fields with
    presence (message fields, `optional` scalars, oneof members) appear only when set,
    since their absence means something (`window_end`: a lifetime window). int64 values
    are plain numbers (every budgetd quantity is below 2^53, so nothing is rounded)."""
    return MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


class Output:
    """Human or machine output on one stream; `console` is set when rich renders."""

    def __init__(self, stream: TextIO, console: Console | None) -> None:
        self.stream = stream
        self.console = console

    @classmethod
    def open(cls, color: str, stream: TextIO | None = None) -> Output:
        """`auto`: rich when the stream is a terminal; `always` / `never` force it."""
        stream = stream if stream is not None else sys.stdout
        use_rich = color == "always" or (color == "auto" and stream.isatty())
        if not use_rich:
            return cls(stream, None)
        console = Console(
            file=stream,
            force_terminal=True,
            highlight=False,
            emoji=False,
            markup=False,
            soft_wrap=False,
        )
        return cls(stream, console)

    # --- machine output ---------------------------------------------------------------

    def json(self, data: object, *, one_line: bool = False) -> None:
        text = json.dumps(data, ensure_ascii=False, indent=None if one_line else 2)
        self.stream.write(text + "\n")
        self.stream.flush()

    # --- human output -----------------------------------------------------------------

    def line(self, text: str = "", style: str = "", *, flush: bool = False) -> None:
        if self.console is not None:
            self.console.print(Text(text, style=style), soft_wrap=True)
        else:
            self.stream.write(text + "\n")
        if flush:
            self.stream.flush()

    def table(
        self, columns: Sequence[Column], rows: Sequence[Sequence[Value]], title: str = ""
    ) -> None:
        cells = [[_cell(value) for value in row] for row in rows]
        if self.console is not None:
            self._rich_table(columns, cells, title)
        else:
            self._plain_table(columns, cells, title)

    def pairs(self, rows: Sequence[tuple[str, Value]], indent: int = 0) -> None:
        """Label / value lines with the values aligned (one ledger, one snapshot)."""
        if self.console is not None:
            cells = [_cell(value) for _, value in rows]
            labels = [" " * indent + label for label, _ in rows]
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True, min_width=_min_width(labels, True))
            widest = max((_min_width([c.text], c.whole) for c in cells), default=0)
            grid.add_column(min_width=widest)
            for label, cell in zip(labels, cells, strict=True):
                grid.add_row(Text(label), _text(cell))
            self._print_wide(grid)
            return
        width = max((len(label) for label, _ in rows), default=0)
        for label, value in rows:
            self.stream.write(f"{' ' * indent}{label:<{width}}  {_cell(value).text}".rstrip())
            self.stream.write("\n")

    def _rich_table(self, columns: Sequence[Column], rows: list[list[Cell]], title: str) -> None:
        assert self.console is not None
        table = Table(
            box=box.SIMPLE_HEAD,
            title=title or None,
            title_justify="left",
            title_style="bold",
            header_style="bold",
            pad_edge=False,
        )
        for i, column in enumerate(columns):
            texts = [column.header, *(row[i].text for row in rows)]
            # A whole column (ledger keys) is never wrapped or cut, and no column gets
            # narrower than its longest word: when the terminal is too narrow for that,
            # the table grows past its width (not cropped) rather than losing text.
            table.add_column(
                column.header,
                justify="right" if column.numeric else "left",
                overflow="ignore" if column.whole else "fold",
                no_wrap=column.whole,
                min_width=_min_width(texts, column.whole),
            )
        for row in rows:
            table.add_row(*(_text(cell) for cell in row))
        unbounded = self.console.options.update_width(_UNBOUNDED)
        if Measurement.get(self.console, unbounded, table).minimum > self.console.width:
            self._records(columns, rows, title)  # a table this wide would wrap into noise
            return
        self.console.print(table, crop=False)

    def _records(self, columns: Sequence[Column], rows: list[list[Cell]], title: str) -> None:
        """A table too wide for the terminal, one record per row: `HEADER  value` lines,
        a blank line between rows. Identifiers still stay whole on their line."""
        if title:
            self.line(title, "bold")
        for index, row in enumerate(rows):
            if index:
                self.line()
            self.pairs([(column.header, cell) for column, cell in zip(columns, row, strict=True)])

    def _print_wide(self, table: Table) -> None:
        """Print a table that may be wider than the terminal, keeping every column's
        min_width: rich would squeeze it to the terminal's width, below those minimums
        (even to nothing), so a table that cannot fit is given the width it needs and
        printed uncropped (the terminal wraps its long lines; no text is lost)."""
        assert self.console is not None
        unbounded = self.console.options.update_width(_UNBOUNDED)
        needed = Measurement.get(self.console, unbounded, table).minimum
        if needed > self.console.width:
            table.width = needed
        self.console.print(table, crop=False)

    def _plain_table(self, columns: Sequence[Column], rows: list[list[Cell]], title: str) -> None:
        if title:
            self.stream.write(title + "\n")
        texts = [[column.header for column in columns]]
        texts += [[cell.text for cell in row] for row in rows]
        widths = [max(cell_len(row[i]) for row in texts) for i in range(len(columns))]
        for row in texts:
            parts = []
            for text, width, column in zip(row, widths, columns, strict=True):
                pad = " " * (width - cell_len(text))
                parts.append(pad + text if column.numeric else text + pad)
            self.stream.write("  ".join(parts).rstrip() + "\n")
