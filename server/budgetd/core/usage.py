"""Usage records and the request-edge rules every operation applies to its arguments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from budgetd.core.errors import InvalidArgument
from budgetd.core.limits import Limits

LABEL_KEY = re.compile(r"[a-z0-9_.-]{1,64}")
_TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "reasoning_tokens",
)

Labels = Mapping[str, str]


@dataclass(slots=True)
class Usage:
    """What one model call spent (or is estimated to spend).

    `cached_input_tokens` (prompt-cache reads) and `cache_write_input_tokens` (prompt-
    cache creation) are parts of `input_tokens`, `reasoning_tokens` a part of
    `output_tokens`, each billed at its own rate. `cost_micro_usd`, when set, wins over
    the price table. `model` and `provider` are also matched as labels. `latency_us`
    (0 = unknown) feeds average-latency summaries.
    A value: not mutated once made (not frozen only because that is slow to build).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_micro_usd: int | None = None
    model: str = ""
    provider: str = ""
    latency_us: int = 0
    cache_write_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def usage_plain(usage: Usage) -> dict[str, Any]:
    """A usage as JSON-compatible data (journal records and snapshots)."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cost_micro_usd": usage.cost_micro_usd,
        "model": usage.model,
        "provider": usage.provider,
        "latency_us": usage.latency_us,
        "cache_write_input_tokens": usage.cache_write_input_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def usage_from_plain(data: Mapping[str, Any]) -> Usage:
    """The inverse of `usage_plain`; reads the whole-millisecond latency of older
    records too."""
    if "latency_ms" in data:
        data = {k: v for k, v in data.items() if k != "latency_ms"} | {
            "latency_us": data["latency_ms"] * 1000
        }
    return Usage(**data)


class EdgeRules:
    """Validates labels, usage and ids against `Limits`, remembering keys already seen.

    Label keys repeat across millions of requests; a key that passed once is kept in a
    bounded set so the regular expression runs once per distinct key, not per request.
    """

    __slots__ = ("_known_keys", "limits")

    _KNOWN_KEYS_MAX = 4096

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._known_keys: set[str] = set()

    def labels(self, labels: Labels, field: str = "labels") -> None:
        limits = self.limits
        if len(labels) > limits.max_labels:
            raise InvalidArgument(field, f"at most {limits.max_labels} labels, got {len(labels)}")
        known = self._known_keys
        max_bytes = limits.max_label_value_bytes
        for key, value in labels.items():
            if key not in known:
                self._label_key(key, field)
            # A str of n chars encodes to at most 4n UTF-8 bytes: most values skip encoding.
            if len(value) * 4 > max_bytes and len(value.encode("utf-8", "surrogatepass")) > (
                max_bytes
            ):
                raise InvalidArgument(f"{field}.{key}", f"value longer than {max_bytes} bytes")

    def _label_key(self, key: str, field: str) -> None:
        if (
            not isinstance(key, str)
            or len(key) > self.limits.max_label_key_chars
            or (LABEL_KEY.fullmatch(key) is None)
        ):
            raise InvalidArgument(
                f"{field}[{key!r}]",
                f"label keys match [a-z0-9_.-]{{1,{self.limits.max_label_key_chars}}}",
            )
        if len(self._known_keys) < self._KNOWN_KEYS_MAX:
            self._known_keys.add(key)

    def usage(self, usage: Usage, field: str) -> None:
        limits = self.limits
        max_tokens = limits.max_tokens
        cost = usage.cost_micro_usd
        cached = usage.cached_input_tokens
        written = usage.cache_write_input_tokens
        if not (
            0 <= usage.input_tokens <= max_tokens
            and 0 <= usage.output_tokens <= max_tokens
            and cached >= 0
            and written >= 0
            and cached + written <= usage.input_tokens
            and 0 <= usage.reasoning_tokens <= usage.output_tokens
            and 0 <= usage.latency_us <= limits.max_latency_ms * 1000
            and (cost is None or 0 <= cost <= limits.max_cost_micro_usd)
            and len(usage.model) <= 64
            and len(usage.provider) <= 64
        ):
            self._usage_slow(usage, field)

    def _usage_slow(self, usage: Usage, field: str) -> None:
        """Check each rule in turn and name the first one broken (the slow path)."""
        limits = self.limits
        max_tokens = limits.max_tokens
        for name in _TOKEN_FIELDS:
            value = getattr(usage, name)
            if not 0 <= value <= max_tokens:
                raise InvalidArgument(f"{field}.{name}", f"must be in 0..{max_tokens}, got {value}")
        if usage.cached_input_tokens + usage.cache_write_input_tokens > usage.input_tokens:
            raise InvalidArgument(
                f"{field}.cached_input_tokens",
                "cached_input_tokens + cache_write_input_tokens must not exceed input_tokens"
                " (they are parts of it)",
            )
        if usage.reasoning_tokens > usage.output_tokens:
            raise InvalidArgument(
                f"{field}.reasoning_tokens", "must not exceed output_tokens (it is a part of it)"
            )
        cost = usage.cost_micro_usd
        if cost is not None and not 0 <= cost <= limits.max_cost_micro_usd:
            raise InvalidArgument(
                f"{field}.cost_micro_usd",
                f"must be in 0..{limits.max_cost_micro_usd}, got {cost}",
            )
        if not 0 <= usage.latency_us <= limits.max_latency_ms * 1000:
            raise InvalidArgument(
                f"{field}.latency_us", f"must be in 0..{limits.max_latency_ms * 1000}"
            )
        max_bytes = limits.max_label_value_bytes
        for name in ("model", "provider"):
            value = getattr(usage, name)
            if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
                raise InvalidArgument(f"{field}.{name}", f"longer than {max_bytes} bytes")

    def identifier(self, value: str, field: str) -> None:
        """Request, run and reservation ids: 1..max printable ASCII characters, no spaces."""
        limit = self.limits.max_request_id_chars
        if not (
            0 < len(value) <= limit and value.isascii() and value.isprintable() and " " not in value
        ):
            raise InvalidArgument(field, f"must be 1..{limit} printable ASCII characters")

    def ttl(self, ttl_s: float, maximum_s: float, field: str) -> None:
        if not 0 < ttl_s <= maximum_s:
            raise InvalidArgument(field, f"must be in (0, {maximum_s:g}] seconds, got {ttl_s:g}")
