"""Suite-wide guard: `BUDGETD_CORE=compiled` means the compiled core must be the one imported.

`make test` runs the core's tests a second time with the mypyc-built tree first on
PYTHONPATH; without this check a broken path would quietly test the sources twice.
"""

from __future__ import annotations

import os

import pytest

import budgetd.core  # first: budgetd turns gRPC's fork handlers off before grpc loads


def pytest_sessionstart(session: pytest.Session) -> None:
    wanted = os.environ.get("BUDGETD_CORE", "")
    if wanted == "compiled" and not budgetd.core.COMPILED:
        raise pytest.UsageError(
            f"BUDGETD_CORE=compiled but budgetd.core came from {budgetd.core.__file__}; "
            "run `make native` and put build/native first on PYTHONPATH"
        )
