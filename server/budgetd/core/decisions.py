"""How a request is judged against ledgers: pure functions of counters and caps.

Kept apart from the engine, which owns state: these only read a ledger and build
answers (blockers, decisions, overruns).
"""

from __future__ import annotations

from budgetd.core.dimensions import HELD_DIMENSIONS, Dimension
from budgetd.core.events import Blocker, Event, ThresholdCrossed
from budgetd.core.ledger import Ledger, returns_at, wall_clock_ms, window_end_of
from budgetd.core.policy import Enforcement
from budgetd.core.records import Deadline
from budgetd.core.results import Decision, Overrun
from budgetd.core.shares import Share, ceiling
from budgetd.core.usage import Usage

CONCURRENCY = Dimension.CONCURRENCY
RUN_DURATION = Dimension.RUN_DURATION_MS
WALL_CLOCK = Dimension.WALL_CLOCK_MS
COST = Dimension.COST_MICRO_USD


def usage_delta(usage: Usage, cost: int | None) -> tuple[int, ...]:
    """The VECTOR_SIZE increment one usage record adds to a ledger."""
    latency = usage.latency_us
    total = usage.input_tokens + usage.output_tokens
    return (
        total,
        usage.input_tokens,
        usage.output_tokens,
        0 if cost is None else cost,
        1,
        0,
        0,
        usage.cached_input_tokens,
        1 if cost is None else 0,
        latency,
        1 if latency else 0,
        0,
        usage.cache_write_input_tokens,
        usage.reasoning_tokens,
        total if cost is None else 0,
    )


def crossings(events: list[Event]) -> tuple[ThresholdCrossed, ...]:
    if not events:
        return ()
    return tuple(e for e in events if type(e) is ThresholdCrossed)


def decide(blockers: list[Blocker], warnings: list[Blocker], warn: bool) -> Decision:
    if blockers:
        return Decision.DENY
    if warn or any(w.enforcement is Enforcement.SOFT for w in warnings):
        return Decision.ALLOW_WITH_WARNING
    return Decision.ALLOW


def collect_blockers(
    ledger: Ledger,
    used: list[int] | None,
    amounts: tuple[int, ...],
    blockers: list[Blocker],
    warnings: list[Blocker],
    now: float,
    slot: bool = False,
    unpriced_model: str | None = None,
    share: Share | None = None,
) -> None:
    """Append a Blocker for every cap of `ledger` the request does not fit.

    A request needs at least one unit of headroom in every capped dimension, so an
    exhausted ledger denies even a zero estimate. `unpriced_model` (not None when the
    estimate has no price) blocks at a cost cap unless the policy allows unpriced
    estimates; a wall-clock cap blocks once the window has lasted that long. `used` is
    the counters to judge by (`Ledger.effective_used`), None for the ledger's own.
    A hard global policy's ledger is judged by its `share` too: a request the cap has
    room for but the lease has not gets a Blocker marked `lease`.
    """
    reserved = ledger.reserved
    policy = ledger.policy
    for dimension, limit in ledger.caps:
        if dimension < CONCURRENCY:
            requested = amounts[dimension]
            held = reserved[dimension]
        elif dimension == CONCURRENCY and slot:
            requested, held = 1, 0
        elif dimension == WALL_CLOCK:
            elapsed = wall_clock_ms(ledger, now)
            if elapsed >= limit:
                _add(
                    Blocker(
                        policy.name,
                        ledger.key,
                        dimension,
                        elapsed,
                        0,
                        0,
                        limit,
                        policy.enforcement,
                        window_end_of(ledger),
                    ),
                    blockers,
                    warnings,
                )
            continue
        else:
            continue
        value = ledger.count(dimension) if used is None else used[dimension]
        if dimension == COST and unpriced_model is not None and not policy.unpriced_allowed:
            blocker = Blocker(
                policy.name,
                ledger.key,
                dimension,
                value,
                held,
                0,
                limit,
                policy.enforcement,
                None,
                True,
                unpriced_model,
            )
            _add(blocker, blockers, warnings)
        else:
            wanted = value + held + (requested or 1)
            # Over the cap; or, for a hard global policy, within the cap but past what
            # this sidecar's lease allows (that comes back with a lease, not with time).
            lease = (
                wanted <= limit
                and policy.is_global
                and policy.enforcement is Enforcement.HARD
                and wanted > ceiling(share, dimension, limit, value, policy.on_unavailable, now)
            )
            if wanted <= limit and not lease:
                continue
            blocker = Blocker(
                policy.name,
                ledger.key,
                dimension,
                value,
                held,
                requested,
                limit,
                policy.enforcement,
                None
                if lease or dimension == CONCURRENCY
                else returns_at(ledger, dimension, wanted - limit, now),
                lease=lease,
            )
            _add(blocker, blockers, warnings)


def _add(blocker: Blocker, blockers: list[Blocker], warnings: list[Blocker]) -> None:
    (blockers if blocker.enforcement is Enforcement.HARD else warnings).append(blocker)


def overruns(held: tuple[int, ...], actual: tuple[int, ...]) -> tuple[Overrun, ...]:
    """Dimensions where actual usage went past what was held (the usage stands)."""
    return tuple(
        Overrun(dimension, held[dimension], actual[dimension])
        for dimension in HELD_DIMENSIONS[:4]
        if actual[dimension] > held[dimension]
    )


def duration_blocker(deadline: Deadline, at: float) -> Blocker:
    """The Blocker of a run_duration cap passed by a run that is (or was) still going at `at`."""
    elapsed_ms = deadline.limit_ms + max(0, int((at - deadline.at) * 1000))
    return Blocker(
        deadline.policy,
        deadline.ledger,
        RUN_DURATION,
        elapsed_ms,
        0,
        0,
        deadline.limit_ms,
        deadline.enforcement,
    )
