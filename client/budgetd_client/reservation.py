"""Reservation handles: a granted hold that is also a context manager.

`reserve` answers at once with a handle, so both styles work:

    r = client.reserve(labels, estimate=est)      # plain call
    r.commit(actual)

    with client.reserve(labels, estimate=est) as r:   # released unless committed
        r.commit(call_model())

Leaving the block without a commit, normally or by an exception, releases the hold, so
a failed model call never keeps budget locked until the ttl. That release is best effort:
if it fails, it is logged (the hold ends at its ttl anyway) and never hides the block's
own exception.

`commit()` and `release()` can simply be called again after a failure (e.g.
`BudgetdUnavailable`): the handle keeps the request_id of the first attempt, so a commit
that did reach the daemon the first time is answered from memory, not counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from budgetd_client._call import new_id
from budgetd_client.enums import Decision
from budgetd_client.errors import BudgetdError
from budgetd_client.models import Blocker, CommitResult, LedgerBrief, ReserveResult, Usage

if TYPE_CHECKING:
    from budgetd_client.aio import AsyncBudgetClient
    from budgetd_client.client import BudgetClient

log = logging.getLogger("budgetd_client")


class _Handle:
    """What both handles share: the grant and whether it was settled."""

    def __init__(self, result: ReserveResult) -> None:
        self.result = result
        self.commit_result: CommitResult | None = None
        self.released = False
        self.commit_request_id: str | None = None
        self.release_request_id: str | None = None

    @property
    def id(self) -> str:
        return self.result.reservation_id

    @property
    def decision(self) -> Decision:
        return self.result.decision

    @property
    def expires_at(self) -> datetime | None:
        return self.result.expires_at

    @property
    def ledgers(self) -> tuple[LedgerBrief, ...]:
        return self.result.ledgers

    @property
    def warnings(self) -> tuple[Blocker, ...]:
        return self.result.warnings

    @property
    def offline(self) -> bool:
        return self.result.offline

    @property
    def done(self) -> bool:
        """Committed or released: nothing is held any more."""
        return self.commit_result is not None or self.released

    def _check_open(self) -> None:
        if self.done:
            state = "committed" if self.commit_result is not None else "released"
            raise BudgetdError(f"reservation {self.id} is already {state}")

    def _commit_id(self, request_id: str | None) -> str:
        """The commit's request_id: the caller's, else the one of the first attempt."""
        self.commit_request_id = request_id or self.commit_request_id or new_id()
        return self.commit_request_id

    def _release_id(self, request_id: str | None) -> str:
        self.release_request_id = request_id or self.release_request_id or new_id()
        return self.release_request_id

    def _release_failed(self, error: BudgetdError) -> None:
        log.warning(
            "budgetd_client: releasing reservation %s failed (the hold ends at its ttl): %s",
            self.id,
            error,
        )

    def __repr__(self) -> str:
        state = "committed" if self.commit_result else "released" if self.released else "held"
        return f"<{type(self).__name__} {self.id} {self.decision.value} {state}>"


class Reservation(_Handle):
    """A granted reservation of the sync client."""

    def __init__(self, client: BudgetClient, result: ReserveResult) -> None:
        super().__init__(result)
        self._client = client

    def commit(self, actual: Usage, *, request_id: str | None = None) -> CommitResult:
        """Replace the hold with what the call really used (may exceed the estimate)."""
        self._check_open()
        rid = self._commit_id(request_id)
        self.commit_result = self._client.commit(self.id, actual, request_id=rid)
        return self.commit_result

    def release(self, *, request_id: str | None = None) -> bool:
        """Drop the hold; True when the server had it (False offline or after expiry)."""
        self._check_open()
        released = self._client.release(self.id, request_id=self._release_id(request_id))
        self.released = True
        return released

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.done:
            try:
                self.release()
            except BudgetdError as error:
                self._release_failed(error)


class AsyncReservation(_Handle):
    """A granted reservation of the asyncio client."""

    def __init__(self, client: AsyncBudgetClient, result: ReserveResult) -> None:
        super().__init__(result)
        self._client = client

    async def commit(self, actual: Usage, *, request_id: str | None = None) -> CommitResult:
        """Replace the hold with what the call really used (may exceed the estimate)."""
        self._check_open()
        rid = self._commit_id(request_id)
        self.commit_result = await self._client.commit(self.id, actual, request_id=rid)
        return self.commit_result

    async def release(self, *, request_id: str | None = None) -> bool:
        """Drop the hold; True when the server had it (False offline or after expiry)."""
        self._check_open()
        rid = self._release_id(request_id)
        released = await self._client.release(self.id, request_id=rid)
        self.released = True
        return released

    async def settle(self) -> None:
        """Release unless committed or released; failures are logged, not raised."""
        if not self.done:
            try:
                await self.release()
            except BudgetdError as error:
                self._release_failed(error)


class PendingReservation:
    """What the asyncio client's `reserve` returns: await it for the handle, or use it
    with `async with` to get the handle and release it on exit unless committed."""

    def __init__(self, start: Callable[[], Awaitable[AsyncReservation]]) -> None:
        self._start = start
        self._handle: AsyncReservation | None = None

    async def _get(self) -> AsyncReservation:
        if self._handle is None:  # awaited twice: reserve once
            self._handle = await self._start()
        return self._handle

    def __await__(self) -> Generator[object, None, AsyncReservation]:
        return self._get().__await__()

    async def __aenter__(self) -> AsyncReservation:
        return await self._get()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            await self._handle.settle()
