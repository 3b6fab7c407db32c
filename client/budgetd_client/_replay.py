"""Replaying what the client owes the daemon (`budgetd_client.buffer`), for both clients,
and the last flush when the process exits.

Grants to undo go first (they hold budget other agents may need), then usage records,
oldest first. Each item is its call (the Consume, the Reserve again with its own
request_id, or the CloseRun of a run opened offline), then its follow-up, if any (the
Release of a reservation). `BudgetdUnavailable` stops the
replay with the item still at the head: sending it again later is safe, every call in it
carries its request_id. So does `Unauthenticated`: it says nothing about the record (the
daemon did not look at it) but that this client's token is not, or no longer, known, and
the records stay for when it is fixed. PERMISSION_DENIED is about the record (its labels
outside the token's scope): that record is rejected, like an invalid one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from google.protobuf.message import Message

from budgetd_client._core import Core
from budgetd_client._transport import Transport
from budgetd_client.buffer import Item, Queue
from budgetd_client.errors import BudgetdError, BudgetdUnavailable, Unauthenticated

log = logging.getLogger("budgetd_client")

Unary = Callable[[str, Message], Any]
AsyncUnary = Callable[[str, Message], Awaitable[Any]]

# How long the exit hook may spend delivering what is still buffered, in all.
EXIT_FLUSH_S = 2.0


def replay(core: Core, unary: Unary) -> None:
    _drain(core.orphans, unary)
    _drain(core.buffer, unary)


def _drain(queue: Queue[Item], unary: Unary) -> None:
    while (item := queue.head()) is not None:
        try:
            response = unary(*item.first())
        except (BudgetdUnavailable, Unauthenticated):
            raise
        except BudgetdError as error:
            queue.settle(item, error)
            continue
        follow_up = item.follow_up(response)
        if follow_up is not None:
            try:
                unary(*follow_up)
            except BudgetdUnavailable:
                raise
            except BudgetdError as error:  # NOT_FOUND: the hold or run already ended
                _follow_up_failed(follow_up, error)
        queue.settle(item, None)


async def replay_async(core: Core, unary: AsyncUnary) -> None:
    await _drain_async(core.orphans, unary)
    await _drain_async(core.buffer, unary)


async def _drain_async(queue: Queue[Item], unary: AsyncUnary) -> None:
    while (item := queue.head()) is not None:
        try:
            response = await unary(*item.first())
        except (BudgetdUnavailable, Unauthenticated):
            raise
        except BudgetdError as error:
            queue.settle(item, error)
            continue
        follow_up = item.follow_up(response)
        if follow_up is not None:
            try:
                await unary(*follow_up)
            except BudgetdUnavailable:
                raise
            except BudgetdError as error:
                _follow_up_failed(follow_up, error)
        queue.settle(item, None)


def _follow_up_failed(follow_up: tuple[str, Message], error: BudgetdError) -> None:
    method, _ = follow_up
    log.info("budgetd_client: %s after a replay failed (nothing left to undo): %s", method, error)


# --- at exit -----------------------------------------------------------------------------


class ExitFlushing(Protocol):
    def _flush_at_exit(self) -> None: ...


def flush_at_exit(ref: Callable[[], ExitFlushing | None]) -> None:
    """The `atexit` hook of a client (registered with a weak reference, so it never keeps
    a client alive): one bounded flush of whatever the client still owes the daemon."""
    client = ref()
    if client is not None:
        client._flush_at_exit()


def exit_flush(core: Core, transport: Transport, bound_s: float | None = None) -> None:
    """Deliver what is pending within `bound_s` in all (one attempt per call, past the
    circuit breaker, waiting for the channel to connect); what is left is dropped,
    counted in `dropped_records`, and summarised in one warning."""
    if not core.pending:
        return
    bound_s = EXIT_FLUSH_S if bound_s is None else bound_s
    deadline = time.monotonic() + bound_s

    def unary(method: str, request: Message) -> Any:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BudgetdUnavailable(f"no time left to flush at exit ({bound_s:g} s)")
        timeout = min(left, core.settings.timeout_s)
        # wait_for_ready: a channel still (re)connecting is waited for, within the bound.
        return transport.unary(
            method, request, force=True, timeout_s=timeout, retries=0, wait_for_ready=True
        )

    reason = "delivered"
    try:
        replay(core, unary)
    except BudgetdError as error:
        reason = str(error)
    lost = core.buffer.drop_all("the process is exiting and the daemon did not take it")
    core.orphans.drop_all("the process is exiting")
    if lost:
        log.warning(
            "budgetd_client: %d buffered usage record(s) could not be delivered to budgetd at"
            " %s before exit (counted in dropped_records): %s",
            lost,
            core.settings.target,
            reason,
        )
