"""Every bound of the core, named and in one place (all configurable)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from budgetd.core.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may carry and on what the engine may hold.

    Hitting a request bound is `InvalidArgument`; hitting a capacity bound either evicts an
    idle ledger of an evictable policy (with an event carrying its final totals) or raises
    `LimitReached`. Nothing is dropped silently.
    """

    max_labels: int = 16
    max_label_key_chars: int = 64
    max_label_value_bytes: int = 256
    max_request_id_chars: int = 128
    max_tokens: int = 10**12
    max_cost_micro_usd: int = 10**15
    max_latency_ms: int = 86_400_000
    max_ledgers: int = 1_000_000
    max_reservations: int = 100_000
    max_runs: int = 10_000
    max_policies: int = 256
    max_thresholds: int = 7
    max_reservation_ttl_s: float = 3600.0
    max_run_ttl_s: float = 3600.0
    idempotency_max_entries: int = 100_000
    idempotency_max_age_s: float = 86_400.0
    expired_reservation_memory: int = 10_000
    eviction_scan: int = 64
    max_page_size: int = 1000
    list_scan_per_page: int = 100_000
    ended_run_memory: int = 10_000
    sweep_batch: int = 10_000
    # Label sets remembered with the ledgers they resolved to (the hot path's shortcut):
    # agents repeat the same labels call after call.
    route_memo_entries: int = 16_384

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value <= 0:
                raise InvalidArgument(f"limits.{field.name}", f"must be > 0, got {value}")
