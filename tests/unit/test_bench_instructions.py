"""The instruction-count benchmark runs its workers under valgrind and writes a table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.instructions import BATCH_SIZE, main


def test_instruction_counts_are_written_per_operation(tmp_path: Path) -> None:
    out = tmp_path / "instructions.txt"
    sizes = ["--warm-up", str(BATCH_SIZE), "--calls", str(BATCH_SIZE)]
    args = ["--ledgers", "20", *sizes, "--out", str(out)]
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


@pytest.mark.parametrize("flag", ["--calls", "--warm-up"])
def test_counts_that_split_a_batch_are_refused(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A batch operation's row counts whole batches: a count ending inside one would
    # charge the batch's other operations to the counted ones.
    with pytest.raises(SystemExit) as refused:
        main([flag, str(BATCH_SIZE + 1), "--out", str(tmp_path / "instructions.txt")])
    assert refused.value.code == 2
    assert f"{flag} must be a multiple of {BATCH_SIZE}" in capsys.readouterr().err
