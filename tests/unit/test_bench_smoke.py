"""The benchmark harness runs and writes its table (a smoke test: no timing asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.core_bench import main


def test_bench_writes_a_table(tmp_path: Path) -> None:
    """A tiny run prints one row per operation and population plus memory per ledger."""
    out = tmp_path / "core.txt"
    assert main(["--populations", "50", "--calls", "500", "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    assert "consume (4 ledgers)" in table
    assert "reserve+commit" in table
    assert "bytes per ledger" in table
