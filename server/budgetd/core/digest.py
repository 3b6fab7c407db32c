"""A stable digest of a request's arguments, kept with its remembered answer.

A retry must be the identical call: the same request_id with other labels or usage is
a different request, refused rather than answered with the first call's result. The
digest is stable across processes (not Python's randomised `hash`), so it survives
snapshots and restarts, and independent of label order (the wire does not fix it).
"""

from __future__ import annotations

from hashlib import blake2b

from budgetd.core.usage import Labels, Usage

_NO_LABELS: Labels = {}


def request_digest(
    op: str, extra: str, labels: Labels = _NO_LABELS, usage: Usage | None = None
) -> int:
    """64 bits of BLAKE2b over the op, `extra` (ids and ttls as text), the labels in
    key order and every usage field."""
    parts = [op, extra]
    for key in sorted(labels):
        parts.append(key)
        parts.append(labels[key])
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
