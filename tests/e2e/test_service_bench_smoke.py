"""The end-to-end benchmark runs against a real daemon and writes its table (no timing
asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.service_bench import main


def test_service_bench_writes_a_table(tmp_path: Path) -> None:
    out = tmp_path / "service.txt"
    assert main(["--calls", "50", "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    for row in ("Consume (unary)", "Reserve+Commit (unary)", "Consume (ConsumeStream)"):
        assert row in table
