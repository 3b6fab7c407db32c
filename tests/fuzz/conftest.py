"""The fuzz suite's fixed hypothesis profile and its counts file.

Every fuzz test uses `FUZZ` settings (see `settings_for`): derandomized, so CI runs the
same examples each time and a failure reproduces; no example database (nothing is
written under .hypothesis); no deadline (a loaded machine is slow, and the tests
assert outcomes, never time). `BUDGETD_FUZZ_SCALE=10` multiplies every example count
for a longer run by hand. The counts each test recorded go to build/fuzz-counts.txt.
"""

from __future__ import annotations

import pytest

from tests.fuzz.counts import COUNTS, COUNTS_FILE


def pytest_sessionfinish(session: pytest.Session) -> None:
    COUNTS.write()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COUNTS.outcomes:
        terminalreporter.write_line(
            f"fuzz: {COUNTS.total()} calls and examples; per RPC and outcome in {COUNTS_FILE}"
        )
