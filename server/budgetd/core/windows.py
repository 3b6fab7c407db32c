"""Window arithmetic: given a window and an instant, where the current window starts and ends.

Pure functions of their arguments (instants are POSIX seconds). Ledgers call these only
when an instant passes their cached `window_end`, never on every operation.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from budgetd.core.policy import CalendarUnit, Window, WindowKind

# A sliding window is kept as this many buckets: usage ages out with a granularity of
# duration / SLIDING_BUCKETS (one second for a one-minute window).
SLIDING_BUCKETS = 60


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window_bounds(window: Window, anchor: float, now: float) -> tuple[float, float]:
    """[start, end) of the window containing `now`; `anchor` is the ledger's first use.

    Lifetime windows end at +inf; sliding windows are handled by bucket ageing instead
    (see `sliding_bucket_width`) and report their whole span here.
    """
    kind = window.kind
    if kind is WindowKind.LIFETIME:
        return anchor, math.inf
    if kind is WindowKind.CALENDAR:
        assert window.unit is not None
        return calendar_bounds(window.unit, window.time_zone, now)
    if kind is WindowKind.FIXED:
        length = window.duration_s
        index = math.floor((now - anchor) / length) if now >= anchor else 0
        start = anchor + index * length
        return start, start + length
    return now - window.duration_s, now


def calendar_bounds(unit: CalendarUnit, time_zone: str, now: float) -> tuple[float, float]:
    """Local-time boundaries (minute/hour/day/week/month) in an IANA zone, DST-aware."""
    zone = _zone(time_zone)
    local = datetime.fromtimestamp(now, zone)
    if unit is CalendarUnit.MINUTE or unit is CalendarUnit.HOUR:
        # Minutes and hours are fixed lengths of absolute time, aligned in local time:
        # whole seconds and integer arithmetic, so the edges are exact (a float
        # subtraction of the elapsed fraction was off by hundreds of nanoseconds). It
        # stays right in the repeated hour of a DST fall-back: the offset is the one
        # in force at `now`.
        length = 60 if unit is CalendarUnit.MINUTE else 3600
        offset = local.utcoffset()
        shift = int(offset.total_seconds()) if offset is not None else 0
        whole = math.floor(now)
        edge = whole - (whole + shift) % length
        return float(edge), float(edge + length)
    if unit is CalendarUnit.DAY:
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = start + timedelta(days=1)
    elif unit is CalendarUnit.WEEK:
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        following = start + timedelta(days=7)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        following = start.replace(year=year, month=month)
    # Days, weeks and months have local lengths (23 or 25 hours across DST): convert the
    # local boundaries back to instants.
    start_ts = _local_to_timestamp(start, zone)
    end_ts = _local_to_timestamp(following, zone)
    if not start_ts <= now < end_ts:
        # A boundary fell into a DST gap (zones that switch at midnight); clamp to now.
        end_ts = max(end_ts, now + 1e-6)
        start_ts = min(start_ts, now)
    return start_ts, end_ts


def _local_to_timestamp(local: datetime, zone: ZoneInfo) -> float:
    naive = local.replace(tzinfo=None)
    return naive.replace(tzinfo=zone, fold=0).timestamp()


def sliding_bucket_width(window: Window) -> float:
    return window.duration_s / SLIDING_BUCKETS
