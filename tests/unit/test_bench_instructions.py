"""The instruction-count benchmark runs its workers under valgrind and writes a table."""

from __future__ import annotations

import re
from pathlib import Path

from bench.instructions import main


def test_instruction_counts_are_written_per_operation(tmp_path: Path) -> None:
    out = tmp_path / "instructions.txt"
    args = ["--ledgers", "20", "--warm-up", "20", "--calls", "50", "--out", str(out)]
    assert main(args) == 0
    table = out.read_text(encoding="utf-8")
    counts = {
        name: int(count.replace(",", ""))
        for name, count in re.findall(r"^(\S.*?)\s{2,}([\d,]+)$", table, re.MULTILINE)
    }
    assert set(counts) == {
        "consume (4 ledgers)",
        "reserve+commit",
        "consume + metrics",
        "consume, service",
        "batch op, service",
    }
    # A call runs thousands of instructions; a reserve and a commit cost more than a
    # consume, and recording its metrics adds to a consume, as the service adds its
    # request and answer work to it, alone or in a batch.
    assert 1_000 < counts["consume (4 ledgers)"] < counts["reserve+commit"]
    assert counts["consume (4 ledgers)"] < counts["consume + metrics"]
    assert counts["consume (4 ledgers)"] < counts["consume, service"]
    assert counts["consume (4 ledgers)"] < counts["batch op, service"]
