"""A client's configuration, validated once, shared by every part of the SDK."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from budgetd_client._credentials import PLAINTEXT, Credentials, check_transport, tls_options
from budgetd_client.coalescing import Coalescing
from budgetd_client.paths import as_target, default_target
from budgetd_client.retry import Backoff

OnUnavailable = Literal["allow", "deny"]

# Resubscribing waits longer than a unary retry: a daemon restart takes seconds.
RESUBSCRIBE_BACKOFF = Backoff(initial_s=0.05, max_s=2.0)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the constructor of `BudgetClient` / `AsyncBudgetClient` was given.

    `resubscribe_attempts` bounds the consecutive failed (re)subscriptions of an event
    stream, separately from `retries`: at most about attempts x `resubscribe_backoff.max_s`
    of waiting (25 to 50 s with the defaults) before the subscription raises. `offline_recheck_s`:
    with `on_unavailable="allow"`, once a call found the daemon unreachable, calls in the
    next `offline_recheck_s` go offline at once (0 turns this off). `coalesce`: None, or
    how concurrent calls are gathered into batches (`budgetd_client.coalescing`).
    """

    target: str
    on_unavailable: OnUnavailable = "deny"
    timeout_s: float = 5.0
    retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    resubscribe_attempts: int = 30
    resubscribe_backoff: Backoff = RESUBSCRIBE_BACKOFF
    offline_recheck_s: float = 5.0
    credentials: Credentials = PLAINTEXT
    coalesce: Coalescing | None = None

    @classmethod
    def of(
        cls,
        target: str | None,
        on_unavailable: OnUnavailable,
        timeout_s: float,
        retries: int,
        backoff: Backoff | None,
        resubscribe_attempts: int,
        resubscribe_backoff: Backoff | None,
        offline_recheck_s: float,
        credentials: Credentials = PLAINTEXT,
        coalesce: Coalescing | bool | None = None,
    ) -> Settings:
        """The settings of a client constructor's arguments (None: the default)."""
        return cls(
            as_target(target) if target else default_target(),
            on_unavailable=on_unavailable,
            timeout_s=timeout_s,
            retries=retries,
            backoff=backoff or Backoff(),
            resubscribe_attempts=resubscribe_attempts,
            resubscribe_backoff=resubscribe_backoff or RESUBSCRIBE_BACKOFF,
            offline_recheck_s=offline_recheck_s,
            credentials=credentials,
            coalesce=Coalescing.of(coalesce),
        )

    def __post_init__(self) -> None:
        if self.on_unavailable not in ("allow", "deny"):
            raise ValueError(
                f'on_unavailable must be "allow" or "deny", not {self.on_unavailable!r}'
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.resubscribe_attempts < 0:
            raise ValueError(f"resubscribe_attempts must be >= 0, got {self.resubscribe_attempts}")
        if self.offline_recheck_s < 0:
            raise ValueError(f"offline_recheck_s must be >= 0, got {self.offline_recheck_s}")
        check_transport(self.target, self.credentials)

    @property
    def fails_open(self) -> bool:
        return self.on_unavailable == "allow"

    @property
    def channel_options(self) -> list[tuple[str, Any]]:
        """gRPC waits up to 120 s between reconnection attempts by default, and fails every
        call fast meanwhile: a daemon back after a restart would look dead for minutes.
        The channel reconnects at the pace of the client's own backoff instead."""
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", max(1, int(self.backoff.initial_s * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(self.backoff.max_s * 1000))),
        ]
        return options + tls_options(self.credentials)
