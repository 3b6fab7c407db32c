"""The durability benchmark runs end to end on tiny sizes and writes its table (no timing
asserted: speed belongs to `make bench`)."""

from __future__ import annotations

import re
from pathlib import Path

from bench.durability_bench import main


def test_durability_bench_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "durability.txt"
    argv = ["--seconds", "0.2", "--ledgers", "300", "--journal-records", "200"]
    assert main([*argv, "--threads", "20", "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    for mode in ("memory", "snapshot", "journal"):
        assert sum(line.split()[:1] == [mode] for line in table.splitlines()) == 2, table
    assert "rec/fsync" in table and "fork() stalls the parent" in table
    assert re.search(r"recovery of [\d,]+ ledgers \+ 200 journal records", table), table
    assert "p99 during a snapshot / without" in table
