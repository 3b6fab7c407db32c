"""The global-policy bench runs against real sidecars and a real Redis and writes its
tables (no timing asserted: speed belongs in `make bench-global`, never in a test)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.global_bench import main

SPEED_COLUMNS = (
    "| operation | policy | decisions/s (min-max) | vs local | p50 ms | p99 ms "
    "| daemon CPU µs/decision | Redis calls / 1,000 decisions |"
)
OVERSHOOT_COLUMNS = (
    "| max_slice | cap | acknowledged | Redis settled | exact | overshoot | bound "
    "| leased after stop | Redis calls | decisions | clients done | seconds |"
)


def test_global_bench_writes_both_tables(tmp_path: Path) -> None:
    assert shutil.which("redis-server"), "the bench needs redis-server on PATH"
    out = tmp_path / "global.md"
    tiny = ["--quick", "--concurrency", "4", "--duration", "0.3", "--warmup", "0.2"]
    assert main([*tiny, "--cap", "5000", "--slices", "0.05", "--out", str(out)]) == 0
    table = out.read_text(encoding="utf-8")
    assert SPEED_COLUMNS in table and OVERSHOOT_COLUMNS in table
    for operation in ("check", "reserve_commit", "consume"):
        for scope in ("global", "local"):
            assert f"| {operation} | {scope} |" in table
    assert "| 0.05 | 5,000 |" in table
    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert len(data["speed"]) == 6 and len(data["cells"]) == 6
    assert all(cell["errors"] == 0 for cell in data["cells"])
    (run,) = data["overshoot"]
    # What any run must show, however slow the machine: Redis's settled total is what
    # the sidecars acknowledged, and every lease came back on SIGTERM.
    assert run["exact"] and run["redis_total"] == run["acknowledged"] > 0
    assert run["leased_after_stop"] == 0 and run["sidecars_after_stop"] == 0
