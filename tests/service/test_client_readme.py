"""The README's Python SDK example runs as written, with a daemon and without one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.service.support import Served

README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_example() -> str:
    """The first ```python block of the "## Python SDK" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python SDK\n") :]
    section = section[: section.index("\n## ", 1)]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "no python example in the Python SDK section"
    return found.group(1)


@dataclass
class Reply:
    """What the example reads from `call_model`'s answer."""

    prompt_tokens: int
    completion_tokens: int


def run_example(monkeypatch: pytest.MonkeyPatch, target: str) -> dict[str, Any]:
    monkeypatch.setenv("BUDGETD_TARGET", target)
    namespace: dict[str, Any] = {
        "call_model": lambda prompt: Reply(1_800, 420),
        "prompt": "Summarise the thread.",
    }
    exec(compile(sdk_example(), "README.md (Python SDK)", "exec"), namespace)
    return namespace


def test_the_example_runs_against_a_daemon(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = run_example(monkeypatch, served.target)
    tokens, cost = capsys.readouterr().out.split()
    assert tokens == str(1_800 + 420 + 350 + 40)
    assert float(cost) > 0
    assert namespace["run"].totals is not None and not namespace["run"].offline


def test_the_example_runs_without_a_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = run_example(monkeypatch, str(tmp_path / "absent.sock"))  # a bare path
    assert capsys.readouterr().out == ""  # no totals to print
    run, budget = namespace["run"], namespace["budget"]
    assert run.offline and run.totals is None
    assert budget.target == f"unix:{tmp_path}/absent.sock"
    assert budget.dropped_records == 2  # the commit and the consume: counted, logged
