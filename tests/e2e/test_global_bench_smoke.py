"""The global-policy bench runs against real sidecars and a real Redis and writes its
tables (no timing asserted: speed belongs in `make bench-global`)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.global_bench import main


def test_global_bench_writes_both_tables(tmp_path: Path) -> None:
    out = tmp_path / "global.md"
    assert main(["--quick", "--concurrency", "4", "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    for row in ("| check |", "| consume |", "| reserve_commit |", "Redis calls / 1,000"):
        assert row in table
    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    (run,) = data["overshoot"]
    assert run["exact"]  # Redis's total is what the clients were told they spent
    assert run["overshoot"] <= run["bound"]
