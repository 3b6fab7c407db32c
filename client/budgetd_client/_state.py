"""What the sync and async clients both expose about themselves (read-only state)."""

from __future__ import annotations

from budgetd_client._core import Core
from budgetd_client._settings import OnUnavailable
from budgetd_client.coalescing import Coalescing


class ClientState:
    _core: Core
    _closed: bool

    @property
    def target(self) -> str:
        return self._core.settings.target

    @property
    def on_unavailable(self) -> OnUnavailable:
        return self._core.settings.on_unavailable

    @property
    def timeout_s(self) -> float:
        return self._core.settings.timeout_s

    @property
    def coalescing(self) -> Coalescing | None:
        """How concurrent calls are gathered into batches; None: each call is its own RPC."""
        return self._core.settings.coalesce

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered(self) -> int:
        """Usage records waiting for the daemon."""
        return len(self._core.buffer)

    @property
    def dropped_records(self) -> int:
        """Usage records lost: pushed out of a full buffer, rejected by the server on
        replay, or still buffered at `close()` or at exit. Each was logged as a warning."""
        return self._core.buffer.dropped
