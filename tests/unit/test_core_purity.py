"""The core stays pure: no gRPC, asyncio, file, socket, clock or randomness imports.

Method: parse every module of `budgetd.core` and inspect its imports and calls, so a
forbidden dependency fails here rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import budgetd.core

CORE = Path(budgetd.core.__file__).parent
FORBIDDEN_MODULES = {
    "asyncio",
    "grpc",
    "io",
    "os",
    "pathlib",
    "random",
    "secrets",
    "shutil",
    "socket",
    "subprocess",
    "threading",
    "time",
    "uuid",
    "opentelemetry",
}
# datetime is used for calendar arithmetic on instants passed in; reading the clock is not.
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "monotonic", "open", "perf_counter"}


def _modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    """No import of a module that does I/O, reads a clock or draws randomness."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_MODULES, f"{path.name} imports {imported & FORBIDDEN_MODULES}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_module_calls_no_clock_or_file(path: Path) -> None:
    """No call such as datetime.now(), time.time() or open() anywhere in the core."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert not calls & FORBIDDEN_CALLS, f"{path.name} calls {calls & FORBIDDEN_CALLS}"


def test_the_purity_check_sees_every_core_module() -> None:
    """The scan is not vacuous: it covers the engine, ledgers and windows."""
    names = {path.name for path in _modules()}
    assert {"engine.py", "ledger.py", "windows.py", "policy.py", "prices.py"} <= names
