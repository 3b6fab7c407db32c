"""Fixtures of the global-budget store's tests: real redis-servers, one set per test.

No redis-server on PATH fails these tests with the reason (CI installs it); they never
skip. Every server a test starts is stopped at its end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import LocalRedis, require_redis_server


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[..., LocalRedis]]:
    """A factory of redis-servers (LocalRedis options), each in its own directory."""
    try:
        require_redis_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    started: list[LocalRedis] = []

    def make(**options: Any) -> LocalRedis:
        server = LocalRedis(tmp_path / f"redis{len(started)}", **options)
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def redis_server(make_redis: Callable[..., LocalRedis]) -> LocalRedis:
    """One plain redis-server on loopback, persistence off."""
    return make_redis()
