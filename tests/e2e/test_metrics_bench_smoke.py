"""The metrics benchmark runs its four cells against real daemons and writes its table
(no timing asserted: speed belongs to `make bench`)."""

from __future__ import annotations

from pathlib import Path

from bench.metrics_bench import CELLS, NAMES, main


def test_metrics_bench_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "metrics.txt"
    argv = ["--quick", "--warmup", "20", "--calls", "60", "--concurrency", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    for cell in CELLS:
        # Once in the medians, once in the per-cell list.
        assert sum(NAMES[cell] in line for line in table.splitlines()) == 2, table
    for measure in ("ops", "cpu", "norm"):
        assert f"on/off, {measure:<4}: prometheus " in table, table
    assert "down/up" in table
    assert "Consume calls not answered OK" in table
