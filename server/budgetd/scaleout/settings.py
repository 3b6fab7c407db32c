"""The `[global]` settings: how this sidecar shares global policies through Redis.

Without `redis_url` there is no Redis and no global policy (one is refused by name).
Everything is checked here, before the daemon starts: a bad value is a `SettingError`
naming the key under [global] and the rule it broke.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from budgetd.core.shares import DEFAULT_MAX_SLICE_FRACTION

_PREFIX = re.compile(r"[A-Za-z0-9:_.-]{1,64}")
_SIDECAR_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_URL_CHARS = 2048
DEFAULT_PREFIX = "budgetd:"
DEFAULT_LEASE_TTL_S = 30.0
DEFAULT_SYNC_INTERVAL_S = 0.1
DEFAULT_TIMEOUT_S = 1.0
# How long a call whose only obstacle is an empty lease waits for the leaser to top it
# up (the first call on a ledger, the first after a window rolled): 0 answers at once.
DEFAULT_LEASE_WAIT_S = 0.25


class SettingError(ValueError):
    """`key` (under [global]) broke `reason`."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GlobalSettings:
    redis_url: str | None = None  # None: this sidecar has no global policies
    key_prefix: str = DEFAULT_PREFIX
    # The largest slice of a cap one lease takes, and the smallest the leaser asks for
    # (fractions of the cap): the slice adapts to local demand between the two.
    max_slice: float = DEFAULT_MAX_SLICE_FRACTION
    min_slice: float = DEFAULT_MAX_SLICE_FRACTION / 10
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S  # a dead sidecar's slice returns after this
    sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S  # settle and top up this often
    timeout_s: float = DEFAULT_TIMEOUT_S  # one Redis call (connecting included)
    lease_wait_s: float = DEFAULT_LEASE_WAIT_S
    sidecar_id: str | None = None  # None: made once and kept in the state directory

    @property
    def enabled(self) -> bool:
        return self.redis_url is not None

    def shown_url(self) -> str:
        """The URL without its password (for logs and GetServerInfo)."""
        return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", self.redis_url or "")


KEYS = (
    "redis_url",
    "key_prefix",
    "max_slice",
    "min_slice",
    "lease_ttl_seconds",
    "sync_interval_seconds",
    "timeout_seconds",
    "lease_wait_seconds",
    "sidecar_id",
)


def from_file(table: Mapping[str, object]) -> GlobalSettings:
    """The [global] table as written (an empty table: global policies off)."""
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise SettingError(unknown[0], f"unknown key (known: {', '.join(KEYS)})")
    url = table.get("redis_url")
    if url is not None:
        _check_url(url)
    prefix = table.get("key_prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise SettingError("key_prefix", "must match [A-Za-z0-9:_.-]{1,64} (no braces)")
    sidecar = table.get("sidecar_id")
    if sidecar is not None and (
        not isinstance(sidecar, str) or _SIDECAR_ID.fullmatch(sidecar) is None
    ):
        raise SettingError("sidecar_id", "must match [A-Za-z0-9_.:-]{1,64}")
    max_slice = _fraction(table, "max_slice", DEFAULT_MAX_SLICE_FRACTION)
    min_slice = _fraction(table, "min_slice", max_slice / 10)
    if min_slice > max_slice:
        raise SettingError("min_slice", f"must be at most max_slice ({max_slice})")
    ttl = _seconds(table, "lease_ttl_seconds", DEFAULT_LEASE_TTL_S, 1.0, 3600.0)
    sync = _seconds(table, "sync_interval_seconds", DEFAULT_SYNC_INTERVAL_S, 0.01, 60.0)
    if sync * 3 > ttl:
        raise SettingError(
            "sync_interval_seconds", f"must be at most a third of lease_ttl_seconds ({ttl})"
        )
    timeout = _seconds(table, "timeout_seconds", DEFAULT_TIMEOUT_S, 0.01, 60.0)
    if timeout * 3 > ttl:
        raise SettingError(
            "timeout_seconds", f"must be at most a third of lease_ttl_seconds ({ttl})"
        )
    return GlobalSettings(
        redis_url=url if isinstance(url, str) else None,
        key_prefix=prefix,
        max_slice=max_slice,
        min_slice=min_slice,
        lease_ttl_s=ttl,
        sync_interval_s=sync,
        timeout_s=timeout,
        lease_wait_s=_seconds(table, "lease_wait_seconds", DEFAULT_LEASE_WAIT_S, 0.0, 5.0),
        sidecar_id=sidecar if isinstance(sidecar, str) else None,
    )


def _check_url(url: object) -> None:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise SettingError("redis_url", f"must be a URL of at most {MAX_URL_CHARS} characters")
    try:
        from budgetd.scaleout import redis_store  # noqa: PLC0415 (the optional extra)
    except ImportError:
        raise SettingError(
            "redis_url", "needs redis-py: install budgetd with its 'global' extra"
        ) from None
    try:
        redis_store.parse_url(url)
    except ValueError as error:  # (never quotes the URL: it may hold a password)
        raise SettingError("redis_url", str(error).removeprefix("redis url: ")) from None


def _number(value: object) -> float | None:
    """A TOML number as a float (the config reads decimals exactly: Decimal), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fraction(table: Mapping[str, object], key: str, default: float) -> float:
    value = _number(table.get(key, default))
    if value is None or not 0 < value <= 1:
        raise SettingError(key, "must be a fraction of the cap in (0, 1], e.g. 0.01 for 1 %")
    return value


def _seconds(
    table: Mapping[str, object], key: str, default: float, low: float, high: float
) -> float:
    value = _number(table.get(key, default))
    if value is None or not low <= value <= high:
        raise SettingError(key, f"must be a number of seconds in [{low}, {high}]")
    return value
