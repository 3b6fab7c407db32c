"""The fuzz suite's one hypothesis profile (see tests/fuzz/conftest.py).

Goal: the same examples on every CI run, a bounded run time, nothing written to disk.
Each test states its own example count; `BUDGETD_FUZZ_SCALE` multiplies them all.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

SCALE = max(1, int(os.environ.get("BUDGETD_FUZZ_SCALE", "1") or "1"))
SHRINK = os.environ.get("BUDGETD_FUZZ_SHRINK", "") not in ("", "0")
PROFILE = "budgetd-fuzz"
settings.register_profile(
    PROFILE,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    # Shrinking against a live server takes minutes; CI reports the example as found
    # (BUDGETD_FUZZ_SHRINK=1 turns shrinking on for a hunt by hand).
    phases=tuple(p for p in Phase if SHRINK or p is not Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(max_examples: int) -> settings:
    """The profile with this test's example count (times BUDGETD_FUZZ_SCALE)."""
    return settings(settings.get_profile(PROFILE), max_examples=max_examples * SCALE)
