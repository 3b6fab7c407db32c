"""A call as the clients run it: the request, its answers, and its request_id.

Everything about an operation except the I/O is decided when its `Call` is built (see
`budgetd_client._core`); the sync and the asyncio client only run it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from budgetd_client import _validate as v
from budgetd_client.errors import BudgetdError, BudgetdUnavailable, NotFound

T = TypeVar("T")


def new_id() -> str:
    """A request, run or offline reservation id: unique, printable, no spaces."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One operation. `request` None: answered locally (`answer(None)`), nothing is sent.

    `recover`: on NOT_FOUND, the call to make instead (None: raise). `replay`: send the
    offline buffer first (heartbeats do not: they must stay cheap and never block on it).
    """

    method: str
    request: Message | None
    answer: Callable[[Any], T]
    fail_open: Callable[[BudgetdUnavailable], T] | None = None
    recover: Callable[[NotFound], Call[T] | None] | None = None
    request_id: str | None = None
    replay: bool = True


@contextmanager
def tagged(request_id: str | None) -> Iterator[None]:
    """Errors raised in the block carry `request_id` (misuse caught before sending)."""
    try:
        yield
    except BudgetdError as error:
        if error.request_id is None:
            error.request_id = request_id
        raise


def not_sent(error: BudgetdUnavailable) -> BudgetdUnavailable:
    """The replay of the buffer failed before the call itself was sent."""
    return BudgetdUnavailable(
        f"{error.message} (not sent: the offline buffer came first)", error.code
    )


def request_id_of(value: str | None) -> str:
    if value is None:
        return new_id()
    with tagged(value if isinstance(value, str) else None):
        return v.identifier(value, "request_id")


def local_not_found(what: str) -> Callable[[Any], Any]:
    def answer(_: None) -> Any:
        raise NotFound(what)

    return answer
