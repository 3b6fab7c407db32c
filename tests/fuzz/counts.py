"""What the fuzzers did: calls per RPC (or examples per harness) and the outcomes seen.

Goal: a run that passes also says how much it tried, so "no INTERNAL in 2,000 calls"
can be quoted. Each fuzz test records one outcome per call or example; at the end of
the session `tests/fuzz/conftest.py` writes the table to build/fuzz-counts.txt (and
pytest prints where it is).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COUNTS_FILE = REPO / "build" / "fuzz-counts.txt"


class Counts:
    def __init__(self) -> None:
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.notes: list[str] = []

    def record(self, harness: str, outcome: str, calls: int = 1) -> None:
        self.outcomes[harness][outcome] += calls

    def note(self, line: str) -> None:
        self.notes.append(line)

    def total(self) -> int:
        return sum(sum(seen.values()) for seen in self.outcomes.values())

    def table(self) -> str:
        lines = []
        for harness in sorted(self.outcomes):
            seen = self.outcomes[harness]
            calls = sum(seen.values())
            shown = ", ".join(f"{name} {count}" for name, count in sorted(seen.items()))
            lines.append(f"{harness}: {calls} ({shown})")
        lines.append(f"total: {self.total()}")
        return "\n".join([*lines, *self.notes]) + "\n"

    def write(self, path: Path = COUNTS_FILE) -> Path | None:
        if not self.outcomes and not self.notes:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.table())
        return path


COUNTS = Counts()
