"""How budgetctl spells the daemon's values for humans.

The wire carries integers (micro-USD, milliseconds, token counts) and enum numbers;
operators read dollars, durations and lower-case names. Every function here is pure
and total: an enum number this client does not know is shown as a number, never an
exception, so an older budgetctl still works against a newer daemon.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp

from budgetd_client.v1 import budget_pb2 as pb

# The names a policy file uses for caps (`cost_usd = "12.50"`, `run_duration = "2h"`).
DIMENSION_NAMES: dict[int, str] = {
    pb.DIMENSION_TOTAL_TOKENS: "total_tokens",
    pb.DIMENSION_INPUT_TOKENS: "input_tokens",
    pb.DIMENSION_OUTPUT_TOKENS: "output_tokens",
    pb.DIMENSION_COST_MICRO_USD: "cost_usd",
    pb.DIMENSION_REQUESTS: "requests",
    pb.DIMENSION_CONCURRENCY: "concurrency",
    pb.DIMENSION_RUN_DURATION_MS: "run_duration",
    pb.DIMENSION_WALL_CLOCK_MS: "wall_clock",
}

# Severity styles shared by tables and the event stream (rich style names).
STATE_STYLES: dict[int, str] = {
    pb.LEDGER_STATE_OK: "green",
    pb.LEDGER_STATE_WARNING: "yellow",
    pb.LEDGER_STATE_CRITICAL: "dark_orange",
    pb.LEDGER_STATE_FINAL: "red",
    pb.LEDGER_STATE_EXHAUSTED: "bold red",
}
SEVERITY_STYLES: dict[int, str] = {
    pb.SEVERITY_WARNING: "yellow",
    pb.SEVERITY_CRITICAL: "dark_orange",
    pb.SEVERITY_FINAL: "red",
}

_DURATION_UNITS = (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))


def enum_name(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    """`LEDGER_STATE_WARNING` -> `warning`; an unknown number stays a number."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def state(value: int) -> str:
    return enum_name(pb.LedgerState, value, "LEDGER_STATE_")


def severity(value: int) -> str:
    return enum_name(pb.Severity, value, "SEVERITY_")


def enforcement(value: int) -> str:
    # UNSPECIFIED means HARD in a policy (see the contract).
    return (
        "hard"
        if value == pb.ENFORCEMENT_UNSPECIFIED
        else enum_name(pb.Enforcement, value, "ENFORCEMENT_")
    )


def dimension(value: int) -> str:
    return DIMENSION_NAMES.get(value) or enum_name(pb.Dimension, value, "DIMENSION_")


def count(value: int) -> str:
    return f"{value:,}"


def usd(micro: int) -> str:
    """Exact dollars from micro-USD, at least two decimals: 12_500_000 -> `$12.50`."""
    sign = "-" if micro < 0 else ""
    dollars, rest = divmod(abs(micro), 1_000_000)
    return f"{sign}${dollars:,}.{f'{rest:06d}'.rstrip('0').ljust(2, '0')}"


def usd_plain(micro: int) -> str:
    """The decimal string a policy file takes for `cost_usd` (no `$`, no separators)."""
    dollars, rest = divmod(micro, 1_000_000)
    return f"{dollars}.{f'{rest:06d}'.rstrip('0').ljust(2, '0')}"


def millis(value: int) -> str:
    """A span for humans: 7_200_000 -> `2h`, 5_430_000 -> `1h30m30s`, 1_500 -> `1.5s`."""
    if value == 0:
        return "0s"
    if value < 1000:
        return f"{value}ms"
    seconds, ms = divmod(value, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if ms:
        parts.append(f"{seconds}.{f'{ms:03d}'.rstrip('0')}s")
    elif seconds:
        parts.append(f"{seconds}s")
    return "".join(parts)


def span(value: Duration) -> str:
    return millis(value.seconds * 1000 + value.nanos // 1_000_000)


def seconds_spec(seconds: int) -> str:
    """The largest single unit a policy file accepts for a duration: 2_592_000 -> `30d`."""
    for unit, size in _DURATION_UNITS:
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def amount(dim: int, value: int) -> str:
    """A value in a dimension's unit, as humans read it."""
    if dim == pb.DIMENSION_COST_MICRO_USD:
        return usd(value)
    if dim in (pb.DIMENSION_RUN_DURATION_MS, pb.DIMENSION_WALL_CLOCK_MS):
        return millis(value)
    return count(value)


def instant(value: Timestamp, *, with_millis: bool = False) -> str:
    """UTC, ISO 8601: `2027-01-15T08:00:00Z` (operators compare across hosts)."""
    moment = datetime.fromtimestamp(value.seconds, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if with_millis:
        text += f".{value.nanos // 1_000_000:03d}"
    return text + "Z"


def labels(mapping: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={mapping[key]}" for key in sorted(mapping))


def cost(totals: pb.Totals) -> str:
    """Cost, flagged as a lower bound when some usage had no known price."""
    text = usd(totals.cost_micro_usd)
    if totals.unpriced_requests:
        text += f" (+{totals.unpriced_requests:,} unpriced, {totals.unpriced_tokens:,} tokens)"
    return text


def tokens(totals: pb.Totals) -> str:
    parts = [f"input {totals.input_tokens:,}", f"cached {totals.cached_input_tokens:,}"]
    if totals.cache_write_input_tokens:
        parts.append(f"cache write {totals.cache_write_input_tokens:,}")
    parts.append(f"output {totals.output_tokens:,}")
    if totals.reasoning_tokens:
        parts.append(f"reasoning {totals.reasoning_tokens:,}")
    return f"{totals.total_tokens:,} ({', '.join(parts)})"


def average_latency(totals: pb.Totals) -> str:
    if not totals.latency_samples:
        return "-"
    # Microseconds when the daemon sends them (sub-millisecond precision).
    summed_us = totals.latency_us_sum or totals.latency_ms_sum * 1000
    average = summed_us / totals.latency_samples / 1000
    samples = totals.latency_samples
    return f"{average:,.1f}ms ({samples:,} timed request{'' if samples == 1 else 's'})"


def totals_rows(totals: pb.Totals) -> list[tuple[str, str]]:
    """Every figure of a Totals, labelled: what `ledger` and `reset` show."""
    rows = [
        ("tokens", tokens(totals)),
        ("cost", cost(totals)),
        ("requests", count(totals.requests)),
        ("avg latency", average_latency(totals)),
        ("run time", millis(totals.run_duration_ms)),
    ]
    if totals.HasField("first_use"):
        rows.append(("first use", instant(totals.first_use)))
    if totals.HasField("last_use"):
        rows.append(("last use", instant(totals.last_use)))
    return rows


def brief_totals(totals: pb.Totals) -> str:
    """One-line totals for event lines: `1,500 tokens, 3 requests, $0.0123`."""
    return f"{totals.total_tokens:,} tokens, {totals.requests:,} requests, {cost(totals)}"


def joined(items: Iterable[str], empty: str = "-") -> str:
    text = ", ".join(items)
    return text or empty
