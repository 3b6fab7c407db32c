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
    # The text ledgers hold of their own, in UTF-8 bytes: each ledger's key
    # (`policy{k=v,...}`) and its per-key values. max_ledgers alone lets 16 labels of
    # 256 bytes make a 1,000,000-ledger table of ~14 GiB; this bounds that part.
    max_label_bytes: int = 256 * 1024 * 1024
    max_reservations: int = 100_000
    max_runs: int = 10_000
    max_policies: int = 256
    max_thresholds: int = 7
    max_reservation_ttl_s: float = 3600.0
    max_run_ttl_s: float = 3600.0
    # Remembered request ids: at most this many, this many bytes (each counted as
    # `engine.ANSWER_BYTES` plus its id and label text) and this old; the oldest go
    # first. What that leaves, the age of the oldest id remembered, is the real window of
    # a retry: `Engine.idempotency_window`, shown by GetServerInfo.
    idempotency_max_entries: int = 1_000_000
    idempotency_max_bytes: int = 256 * 1024 * 1024
    idempotency_max_age_s: float = 86_400.0
    expired_reservation_memory: int = 10_000
    eviction_scan: int = 64
    max_page_size: int = 1000
    # Ledgers (or runs) one List call looks at, matching or not: it holds the event
    # loop, so a filter that matches little answers a short (even empty) page with a
    # next_page_token instead of scanning the whole table (~3 ms compiled).
    list_scan_per_page: int = 10_000
    ended_run_memory: int = 10_000
    sweep_batch: int = 10_000
    # Label sets remembered with the ledgers they resolved to (the hot path's shortcut):
    # agents repeat the same labels call after call.
    route_memo_entries: int = 16_384
    # ... and the label text they hold (UTF-8 bytes of keys and values): a cache, so
    # reaching either bound drops the oldest entries, never a request.
    route_memo_label_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value <= 0:
                raise InvalidArgument(f"limits.{field.name}", f"must be > 0, got {value}")
