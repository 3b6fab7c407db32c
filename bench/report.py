"""The side-by-side bench's report: medians, per-repetition ratios, targets, Markdown.

Every figure of a row is the median over the repetitions, with its min-max spread.
Every ratio is taken within one repetition (budgetd against the floor, or the peer, of
that same repetition, measured minutes apart at most) and the row shows the median of
those ratios: a slow minute of a shared machine then moves both sides of a ratio, not
one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

FIGURES = (
    "ops_per_s",
    "decisions_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "server_cpu_us_per_op",
    "server_cpu_us_per_decision",
    "server_rss",
    "server_busy",
    "own_busy",
    "others_busy",
)
BATCHED = ("batch", "batch_stream")
# The peer counterpart of a budgetd operation: one EVALSHA per call for the per-call
# operations, a pipeline of 64 for the batched ones.
PEER_OF = {op: "redis" for op in ("check", "consume", "reserve_commit", "consume_stream")} | {
    op: "redis_pipelined" for op in BATCHED
}
# Floor ratios: what budgetd costs over doing nothing. Each is budgetd / floor, so for
# CPU and latency above 1 is worse; for ops/s below 1 is worse.
FLOOR_RATIOS: dict[str, Callable[[dict[str, Any], dict[str, Any]], float]] = {
    "cpu_per_op": lambda b, f: b["server_cpu_us_per_op"] / f["server_cpu_us_per_op"],
    "p50": lambda b, f: b["p50_us"] / f["p50_us"],
    "p999": lambda b, f: b["p999_us"] / f["p999_us"],
    "ops_per_s": lambda b, f: b["ops_per_s"] / f["ops_per_s"],
}
PEER_RATIOS: dict[str, Callable[[dict[str, Any], dict[str, Any]], float]] = {
    "decisions_per_s": lambda b, p: b["decisions_per_s"] / p["decisions_per_s"],
    # Decisions per second of server CPU, budgetd / peer: what each would do with a
    # core to itself (the peer's client may be what limits its measured rate).
    "per_server_cpu": lambda b, p: (
        p["server_cpu_us_per_decision"] / b["server_cpu_us_per_decision"]
    ),
}

Key = tuple[str, str, int, str]  # system, operation, concurrency, transport


def key_of(cell: dict[str, Any]) -> Key:
    return (cell["system"], cell["operation"], int(cell["concurrency"]), cell["transport"])


@dataclass
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread | None:
        found = [v for v in values if not math.isnan(v)]  # a ratio with a zero side
        if not found:
            return None
        return cls(statistics.median(found), min(found), max(found))


@dataclass
class Row:
    system: str
    operation: str
    concurrency: int
    transport: str
    repetitions: int
    figures: dict[str, Spread] = field(default_factory=dict)
    vs_floor: dict[str, Spread] = field(default_factory=dict)
    vs_peer: dict[str, Spread] = field(default_factory=dict)
    peer_operation: str = ""
    errors: int = 0
    skipped: str = ""

    @property
    def key(self) -> Key:
        return (self.system, self.operation, self.concurrency, self.transport)


def _by_repetition(cells: list[dict[str, Any]]) -> dict[Key, dict[int, dict[str, Any]]]:
    found: dict[Key, dict[int, dict[str, Any]]] = {}
    for cell in cells:
        if "skipped" not in cell and cell.get("ops", 0) > 0:
            found.setdefault(key_of(cell), {})[int(cell["repetition"])] = cell
    return found


def _ratios(
    mine: dict[int, dict[str, Any]],
    theirs: dict[int, dict[str, Any]],
    how: dict[str, Callable[[dict[str, Any], dict[str, Any]], float]],
) -> dict[str, Spread]:
    """Each ratio per repetition both sides were measured in, then their spread."""
    shared = sorted(set(mine) & set(theirs))
    out: dict[str, Spread] = {}
    for name, ratio in how.items():
        spread = Spread.of(_safe(ratio, mine[r], theirs[r]) for r in shared)
        if spread is not None:
            out[name] = spread
    return out


def _safe(
    ratio: Callable[[dict[str, Any], dict[str, Any]], float], a: dict[str, Any], b: dict[str, Any]
) -> float:
    try:
        return ratio(a, b)
    except ZeroDivisionError:
        return float("nan")


def rows(cells: list[dict[str, Any]]) -> list[Row]:
    """One row per (system, operation, concurrency, transport), in the order first run."""
    measured = _by_repetition(cells)
    out: list[Row] = []
    seen: set[Key] = set()
    for cell in cells:
        key = key_of(cell)
        if key in seen:
            continue
        seen.add(key)
        reps = measured.get(key, {})
        row = Row(*key, repetitions=len(reps), skipped=str(cell.get("skipped", "")))
        row.errors = sum(int(c.get("errors", 0)) for c in cells if key_of(c) == key)
        for name in FIGURES:
            spread = Spread.of(float(c[name]) for c in reps.values())
            if spread is not None:
                row.figures[name] = spread
        if row.system == "budgetd":
            floor = measured.get(("floor", *key[1:]), {})
            row.vs_floor = _ratios(reps, floor, FLOOR_RATIOS)
            row.peer_operation = PEER_OF.get(row.operation, "")
            peer = measured.get(("peer", row.peer_operation, *key[2:]), {})
            row.vs_peer = _ratios(reps, peer, PEER_RATIOS)
        out.append(row)
    return out


def find(
    table: list[Row], system: str, operation: str, concurrency: int, transport: str
) -> Row | None:
    return next((r for r in table if r.key == (system, operation, concurrency, transport)), None)


# --- targets (issue 13) ----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    measured: float | None
    limit: float
    at_most: bool  # met when measured <= limit (else when >=)
    unit: str = "x"
    note: str = ""
    known: bool = True  # False: the figure read is not a measurement (e.g. a field reading 0)

    @property
    def met(self) -> bool | None:
        if self.measured is None or not self.known:
            return None
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit


@dataclass(frozen=True)
class Goal:
    """A target on a ratio of one budgetd cell: vs the floor, or vs the peer."""

    name: str
    operation: str
    concurrency: int
    transport: str
    ratio: str
    limit: float
    peer: bool = False


def ratio_target(table: list[Row], goal: Goal) -> Target | None:
    """The goal's median ratio; None when its cells were not part of this run (a cell
    that was part of it but could not be measured says why)."""
    where = (goal.operation, goal.concurrency, goal.transport)
    row = find(table, "budgetd", *where)
    other = (
        find(table, "peer", PEER_OF.get(goal.operation, ""), *where[1:])
        if goal.peer
        else find(table, "floor", *where)
    )
    if row is None or other is None:
        return None
    spread = (row.vs_peer if goal.peer else row.vs_floor).get(goal.ratio)
    if spread is None:
        note = row.skipped or other.skipped or "no repetition measured both"
        return Target(goal.name, None, goal.limit, not goal.peer, note=note)
    note = f"repetitions {spread.low:.2f}-{spread.high:.2f}"
    return Target(goal.name, spread.median, goal.limit, not goal.peer, note=note)


UNARY_TARGETS = (("consume", "Consume"), ("check", "Check"), ("reserve_commit", "Reserve+Commit"))


def cell_goals(transports: tuple[str, ...]) -> list[Goal]:
    """The issue's targets on the cells, for each transport where they name none."""
    goals = []
    for transport in transports:
        for op, label in UNARY_TARGETS:
            name = f"{label} server CPU/call, c=64 {transport}, vs floor"
            goals.append(Goal(name, op, 64, transport, "cpu_per_op", 1.10))
    for op, label in UNARY_TARGETS:
        goals.append(Goal(f"{label} p50, c=1 uds, vs floor", op, 1, "uds", "p50", 1.10))
    for transport in transports:
        for op, label in UNARY_TARGETS:
            name = f"{label} p99.9, c=64 {transport}, vs floor"
            goals.append(Goal(name, op, 64, transport, "p999", 1.2))
        name = f"ConsumeStream server CPU/message, c=64 {transport}, vs floor"
        goals.append(Goal(name, "consume_stream", 64, transport, "cpu_per_op", 1.10))
    return goals


def cell_targets(table: list[Row], transports: tuple[str, ...]) -> tuple[list[Target], int]:
    """The targets whose cells ran, and how many were left out because theirs did not."""
    out: list[Target] = []
    left_out = 0
    for goal in cell_goals(transports):
        target = ratio_target(table, goal)
        left_out += target is None
        out += [target] if target else []
    for transport in transports:
        for op in BATCHED:
            found = _batch_targets(table, op, transport)
            left_out += 2 - len(found)
            out += found
    return out, left_out


def _batch_targets(table: list[Row], op: str, transport: str) -> list[Target]:
    row = find(table, "budgetd", op, 64, transport)
    if row is None:
        return []
    rate = row.figures.get("decisions_per_s")
    name = "Batch" if op == "batch" else "BatchStream"
    found = [
        Target(
            f"{name} decisions/s, c=64 {transport}",
            rate.median if rate else None,
            100_000,
            at_most=False,
            unit="/s",
            note=f"repetitions {rate.low:,.0f}-{rate.high:,.0f}" if rate else row.skipped,
        )
    ]
    goal = Goal(f"{name} decisions/s, c=64 {transport}, vs peer pipelined", op, 64, transport,
                "decisions_per_s", 2.5, peer=True)  # fmt: skip
    versus = ratio_target(table, goal)
    if versus is not None:
        capacity = row.vs_peer.get("per_server_cpu")
        if capacity is not None:
            versus.note += f"; per second of server CPU: {capacity.median:.2f}x the peer"
        found.append(versus)
    return found


def extra_targets(extras: dict[str, Any]) -> list[Target]:
    out = []
    readers = extras.get("subscribers")
    if readers:
        low, high = readers["ratio_spread"]
        out.append(
            Target(
                f"Consume c=64 with {readers['readers']} Subscribe readers, vs none",
                readers["ratio"],
                0.8,
                at_most=False,
                note=f"repetitions {low:.2f}-{high:.2f}",
            )
        )
    big = extras.get("million")
    if big:
        out += _million_targets(big)
    return out


def _million_targets(big: dict[str, Any]) -> list[Target]:
    count = f"{big['ledgers']:,} ledgers"
    collections = int(big["gc_collections"])
    unreported = "; both read 0: the daemon does not report them (yet)" if not collections else ""
    return [
        Target(f"RSS per ledger at {count}", big["rss_per_ledger"], 600, True, "B"),
        Target(
            f"Consume p50 c=1 at {count}, vs at {big['ledgers_before']:,}",
            big["p50_ratio"],
            1.2,
            True,
            note=f"{big['p50_large_us']:.0f} vs {big['p50_small_us']:.0f} µs",
        ),
        Target(
            f"longest collector pause at {count}",
            big["longest_gc_pause_ms"],
            10,
            True,
            "ms",
            note=f"GetServerInfo: gc_collections={collections}{unreported}",
            known=collections > 0,
        ),
    ]


# --- Markdown ------------------------------------------------------------------------------


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _with_spread(spread: Spread | None, ratio: bool = False) -> str:
    if spread is None:
        return "-"
    if spread.low == spread.high:  # one repetition: no spread to show
        return f"{spread.median:.2f}x" if ratio else _num(spread.median)
    if ratio:
        return f"{spread.median:.2f}x ({spread.low:.2f}-{spread.high:.2f})"
    return f"{_num(spread.median)} ({_num(spread.low)}-{_num(spread.high)})"


def _plain(spread: Spread | None, scale: float = 1.0) -> str:
    return _num(spread.median / scale) if spread else "-"


TABLE_HEAD = (
    "| system | operation | c | via | ops/s (min-max) | decisions/s | p50 µs (min-max) | p99 µs "
    "| p99.9 µs | server CPU µs/op (min-max) | server RSS MiB | load gen CPUs | ÷ floor: CPU/op "
    "| ÷ floor: p50 | ÷ floor: p99.9 | ÷ floor: ops/s | ÷ peer: decisions/s |\n"
    "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)
FLOOR_COLUMNS = ("cpu_per_op", "p50", "p999", "ops_per_s")


def _row_line(row: Row) -> str:
    f = row.figures
    head = f"| {row.system} | {row.operation} | {row.concurrency} | {row.transport} "
    if not row.repetitions:
        return head + f"| not measured: {row.skipped or 'no repetition answered'} |" + " |" * 12
    batched = row.operation in BATCHED or row.operation == "redis_pipelined"
    peer = row.vs_peer.get("decisions_per_s")
    cells = [
        _with_spread(f.get("ops_per_s")),
        _plain(f.get("decisions_per_s")) if batched else "=",
        _with_spread(f.get("p50_us")),
        _plain(f.get("p99_us")),
        _plain(f.get("p999_us")),
        _with_spread(f.get("server_cpu_us_per_op")),
        _plain(f.get("server_rss"), 2**20),
        f"{f['own_busy'].median:.2f}" if "own_busy" in f else "-",
        *(_with_spread(row.vs_floor.get(k), ratio=True) for k in FLOOR_COLUMNS),
        f"{_with_spread(peer, ratio=True)} ({row.peer_operation})" if peer else "-",
    ]
    return head + "".join(f"| {c} " for c in cells) + "|"


def table_lines(table: list[Row]) -> list[str]:
    lines = [TABLE_HEAD, *(_row_line(row) for row in table)]
    others = Spread.of(r.figures["others_busy"].median for r in table if "others_busy" in r.figures)
    if others is not None:
        lines += [
            "",
            f"load gen CPUs: the load generator's CPU time over the window, in CPUs (near 1: "
            f"it, not the server, set the pace). Other processes on the machine used a median "
            f"of {others.median:.2f} CPUs during the windows ({others.low:.2f}-{others.high:.2f} "
            "over the rows): CPU time neither the server nor the load generator got.",
        ]
    return lines


def _shown(target: Target) -> str:
    if target.measured is None:
        return "not measured"
    if target.unit == "x":
        return f"{target.measured:.2f}x"
    if target.unit == "/s":
        return f"{target.measured:,.0f}/s"
    return f"{target.measured:,.1f} {target.unit}"


def target_lines(targets: list[Target], left_out: int = 0) -> list[str]:
    lines = ["| target | measured | limit | met | note |", "|---|--:|--:|---|---|"]
    for t in targets:
        unit = t.unit if t.unit in ("x", "/s") else f" {t.unit}"
        limit = f"{'≤' if t.at_most else '≥'} {t.limit:,g}{unit}"
        verdict = {True: "**met**", False: "**not met**", None: "unknown"}[t.met]
        lines.append(f"| {t.name} | {_shown(t)} | {limit} | {verdict} | {t.note} |")
    met = sum(1 for t in targets if t.met)
    failed = sum(1 for t in targets if t.met is False)
    unknown = len(targets) - met - failed
    lines += ["", f"{met} of {len(targets)} targets met, {failed} not met, {unknown} unknown."]
    if left_out:
        lines[-1] += f" {left_out} not evaluated: their cells were not part of this run."
    return lines
