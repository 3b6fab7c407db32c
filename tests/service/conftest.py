"""Fixtures of the service tests: in-process servers (see `support`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.support import Served, serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A server on the embedded default policies."""
    yield from serve(tmp_path)


@pytest.fixture
def make_served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """A factory for servers with other policies or bounds (each stopped at the end)."""
    generators: list[Iterator[Served]] = []

    def make(**options: Any) -> Served:
        path = tmp_path / f"s{len(generators)}"
        path.mkdir()
        gen = serve(path, **options)
        generators.append(gen)
        return next(gen)

    yield make
    for gen in generators:
        for _ in gen:  # runs the generator's cleanup
            pass
