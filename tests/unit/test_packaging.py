"""Two distributions: the SDK (`budgetd-client`, client/) and the daemon (`budgetd`, root).

Goal: the SDK installs and runs without the daemon. Method: read both pyproject files and
every module of client/ (no import): the SDK declares none of the daemon's dependencies
and imports nothing from `budgetd`; the daemon depends on the SDK at the same version;
the versions the code reports are the ones the distributions carry.
tests/e2e/test_client_install.py then installs the SDK alone into a fresh venv.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

import budgetd
import budgetd_client

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = {"uvloop", "grpcio-reflection", "grpcio-health-checking", "mypy-extensions"}


def project(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads(path.read_text())["project"]
    return data


def names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of requirement strings."""
    found = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match, requirement
        found.add(re.sub(r"[-_.]+", "-", match.group(0)).lower())
    return found


def test_the_sdk_declares_none_of_the_daemons_dependencies() -> None:
    client = project(ROOT / "client" / "pyproject.toml")
    assert client["name"] == "budgetd-client"
    assert names(client["dependencies"]) == {"grpcio", "protobuf", "rich"}
    assert client["scripts"] == {"budgetctl": "budgetd_client.ctl:main"}


def test_the_daemon_depends_on_the_sdk_at_its_version_and_not_on_rich() -> None:
    server = project(ROOT / "pyproject.toml")
    assert f"budgetd-client=={budgetd_client.__version__}" in server["dependencies"]
    assert "rich" not in names(server["dependencies"])
    assert names(server["dependencies"]) >= SERVER_ONLY
    assert server["scripts"] == {"budgetd": "budgetd.__main__:main"}  # budgetctl: the SDK's


def test_both_distributions_carry_one_version() -> None:
    """Each pyproject reads its version from the package, which `--version` prints."""
    assert budgetd.__version__ == budgetd_client.__version__
    for path, attr in (
        (ROOT / "pyproject.toml", "budgetd.__version__"),
        (ROOT / "client" / "pyproject.toml", "budgetd_client.__version__"),
    ):
        assert project(path)["dynamic"] == ["version"]
        setuptools = tomllib.loads(path.read_text())["tool"]["setuptools"]
        assert setuptools["dynamic"]["version"] == {"attr": attr}


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_module_of_the_sdk_imports_the_daemon() -> None:
    sources = sorted((ROOT / "client" / "budgetd_client").rglob("*.py"))
    assert len(sources) > 30  # the whole SDK, stubs included
    offenders = {}
    for path in sources:
        bad = {
            m
            for m in imported_modules(path)
            if m.split(".")[0] in {"budgetd", "uvloop", "grpc_reflection", "grpc_health"}
        }
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"the SDK must install without the daemon: {offenders}"
