"""What a remembered request was, so a reuse of its request_id with other arguments is
refused rather than answered with the first call's result.

On the hot path only a *fingerprint* is kept: a tuple of references to what the call
already built (its labels as pairs, its usage, its other arguments) — no hashing, no
text. A stable 64-bit digest (BLAKE2b, not Python's per-process `hash`) is computed from
it only when it is needed: to compare on a retry, and when a snapshot is written (in
the snapshot's child process), so it survives restarts. Labels count in any order.
"""

from __future__ import annotations

from hashlib import blake2b

from budgetd.core.usage import Usage

Pairs = tuple[tuple[str, str], ...]
# (label pairs, usage or None, other arguments: ids, ttls) of a live request.
Fingerprint = tuple[Pairs, Usage | None, tuple[object, ...]]
# A digest (from a snapshot), a live fingerprint, or None (an older state kept none).
Remembrance = int | Fingerprint | None

NO_PAIRS: Pairs = ()


def digest_of(op: str, remembered: Remembrance) -> int | None:
    """The stable digest of a remembered request (None when none was kept)."""
    if remembered is None or isinstance(remembered, int):
        return remembered
    pairs, usage, extras = remembered
    parts = [op, repr(extras)]
    for key, value in sorted(pairs):
        parts.append(key)
        parts.append(value)
    if usage is not None:
        parts.append(
            f"{usage.input_tokens},{usage.output_tokens},{usage.cached_input_tokens},"
            f"{usage.cache_write_input_tokens},{usage.reasoning_tokens},"
            f"{usage.cost_micro_usd},{usage.latency_us}"
        )
        parts.append(usage.model)
        parts.append(usage.provider)
    data = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def differs(op: str, prior: Remembrance, request: Fingerprint) -> bool:
    """True when `request` is not the remembered one (never, when none was kept)."""
    if prior is None:
        return False
    return digest_of(op, prior) != digest_of(op, request)
