"""One ledger: the counters of one (policy, per-key values) pair in its current window.

Everything here is synchronous arithmetic on integer lists. The engine decides which
ledgers an operation touches; a ledger knows how to count, roll its window and report
threshold crossings. Hot-path methods are written for speed: no per-call allocation
beyond the events they return.

A million ledgers are kept at once, so a ledger holds only what must be its own (see
`Ledger`): what can be derived from its key and its policy (its per-key values, its
labels, the label bytes it counts) is derived when asked for, rarely; what is the same
for many ledgers (no holds, no triggers beyond the first two) is one shared value.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

from budgetd.core.dimensions import (
    HELD_SIZE,
    VECTOR_SIZE,
    WINDOWED_SLOTS,
    Dimension,
    zero_vector,
)
from budgetd.core.errors import InvariantBroken, invariant
from budgetd.core.events import (
    Event,
    LedgerExhausted,
    ThresholdCrossed,
    Totals,
    WindowRolledOver,
)
from budgetd.core.policy import (
    Enforcement,
    LedgerState,
    Policy,
    WindowKind,
    trigger_amount,
)
from budgetd.core.results import DimensionStatus, LedgerStatus
from budgetd.core.windows import SLIDING_BUCKETS, sliding_bucket_width, window_bounds

# A trigger no counter reaches: the largest integer the compiled core keeps unboxed
# (larger ones are objects, compared by a slower path).
NEVER: Final = (1 << 62) - 1
# `first_at` / `last_at` of a window nothing was recorded in yet (`first_use` is None).
NO_TIME: Final = -math.inf
# What a ledger without holds has reserved: one list shared by all of them and never
# written to. `hold` gives a ledger its own list; `release` of its last hold takes it
# back (a million idle ledgers would otherwise keep a million lists of zeros).
NO_HOLDS: Final[list[int]] = [0] * HELD_SIZE
# The triggers of caps past the second, for ledgers that have at most two caps.
NO_TRIGGERS: Final[list[int]] = []
_CLEARED: Final[list[int]] = [0] * VECTOR_SIZE  # the counters of a new window
CONCURRENCY: Final = Dimension.CONCURRENCY
RUN_DURATION: Final = Dimension.RUN_DURATION_MS
WALL_CLOCK: Final = Dimension.WALL_CLOCK_MS
EXHAUSTION_LEVEL: Final = 7  # bit offset of "100 % of the cap" within a dimension's byte
_CONCURRENCY_BITS: Final = 0xFF << (CONCURRENCY * 8)
# Windows of a global ledger that start from the epoch, the same on every sidecar.
_EPOCH_ANCHORED: Final = frozenset((WindowKind.FIXED, WindowKind.LIFETIME))

Ident = tuple[str, ...]  # (policy name, *values of its per keys)


class Ledger:
    """One ledger's counters and what its thresholds and answers need.

    Laid out for a million of them: the compiled object is 304 bytes, and while it
    holds nothing its only other objects are its brief and the key in it. Ints and
    floats are stored unboxed by mypyc: the counters are fields, one per slot of the
    counter vector (`dimensions`; `count(slot)` reads one by index, `counts()` is the
    vector), so adding usage allocates nothing; times are floats with NO_TIME for
    "never" rather than `float | None`. `reserved` is NO_HOLDS while nothing is held;
    the next triggers of the first two caps are fields (`trigger0`, `trigger1`), those
    of further caps a list. The key and the state are the brief's. The key is the
    ledger's identity: its per-key values (`ident`), its labels (`label_map`) and the
    label bytes it counts are derived from it.
    """

    __slots__ = (
        "alive",
        "anchor",
        "brief",
        "buckets",
        "cache_write_input_tokens",
        "cached_input_tokens",
        "caps",
        "caps_overridden",
        "cost_micro_usd",
        "counted_wall_clock_ms",
        "fired",
        "first_at",
        "freed_at",
        "holds",
        "input_tokens",
        "last_at",
        "latency_samples",
        "latency_us_sum",
        "more_triggers",
        "open_runs",
        "output_tokens",
        "policy",
        "reasoning_tokens",
        "requests",
        "reserved",
        "run_duration_ms",
        "serial",
        "total_tokens",
        "trigger0",
        "trigger1",
        "unpriced_requests",
        "unpriced_tokens",
        "window_end",
        "window_start",
    )

    def __init__(self, key: str, policy: Policy, now: float, serial: int) -> None:
        # (mypyc lays the fields out in the order first assigned: the two flags first
        # share a word.)
        self.alive = True
        self.caps_overridden = False
        self.policy = policy
        # Caps are fixed at creation: changing a policy's default affects new ledgers only,
        # unless the change is applied to existing ones explicitly.
        self.caps = policy.caps
        # The counters (VECTOR_SIZE slots, in the order of `dimensions`).
        self.total_tokens = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_micro_usd = 0
        self.requests = 0
        self.open_runs = 0
        self.run_duration_ms = 0
        self.cached_input_tokens = 0
        self.unpriced_requests = 0
        self.latency_us_sum = 0
        self.latency_samples = 0
        # Slot 11 keeps the vector's layout: a wall-clock cap is measured from the window
        # (`wall_clock_ms()`), never counted, so this stays 0 in a live ledger.
        self.counted_wall_clock_ms = 0
        self.cache_write_input_tokens = 0
        self.reasoning_tokens = 0
        self.unpriced_tokens = 0
        self.reserved = NO_HOLDS
        self.holds = 0
        self.fired = 0
        self.serial = serial
        # What hot-path answers report per ledger: (key, state), one object per change of
        # state (the transport serializes each once), and the ledger's only record of its
        # key and state (`key`, `state`). Typed as a tuple of any length: a fixed-length
        # tuple field is unboxed by mypyc and rebuilt on every read.
        self.brief: tuple[Any, ...] = (key, LedgerState.OK)
        self.first_at = NO_TIME
        self.last_at = NO_TIME
        self.freed_at = 0.0  # when the last hold or run let go of it (idle ttls)
        # Fixed windows count from the first use, but a global ledger's windows must
        # begin at the same instant on every sidecar: from the epoch (a lifetime one
        # too: its start is its window's index in Redis, 0, on every sidecar and in
        # every ledger the policy ever has).
        self.anchor = 0.0 if policy.is_global and policy.window.kind in _EPOCH_ANCHORED else now
        self.window_start = 0.0
        self.window_end = math.inf
        self.trigger0 = NEVER
        self.trigger1 = NEVER
        self.more_triggers = NO_TRIGGERS
        sliding = policy.window.kind is WindowKind.SLIDING
        self.buckets: deque[tuple[int, list[int]]] | None = deque() if sliding else None
        self._start_window(now)
        self.reset_triggers()
        self.refresh_levels(now, [])

    # --- what is derived from the key ------------------------------------------------

    @property
    def key(self) -> str:
        """`policy{k=v,...}`: the ledger's identity (engine.Engine._ledgers)."""
        return cast(str, self.brief[0])

    @property
    def state(self) -> LedgerState:
        """OK, the severity of the highest threshold crossed, or EXHAUSTED."""
        return cast(LedgerState, self.brief[1])

    @property
    def ident(self) -> Ident:
        """(policy name, *values of its per keys): what snapshots name the ledger by."""
        return (self.policy.name, *key_values(self.key, self.policy))

    @property
    def label_map(self) -> dict[str, str]:
        """The ledger's labels (built when asked for: events and statuses carry them)."""
        return self.labels()

    @property
    def label_bytes(self) -> int:
        """What it counts against limits.max_label_bytes (see `ledger_text_bytes`)."""
        return key_text_bytes(self.key, self.policy)

    @property
    def first_use(self) -> float | None:
        first = self.first_at
        return None if first == NO_TIME else first

    @property
    def last_use(self) -> float | None:
        last = self.last_at
        return None if last == NO_TIME else last

    # --- windows -------------------------------------------------------------------

    def _start_window(self, now: float) -> None:
        if self.buckets is not None:
            self.window_start = now - self.policy.window.duration_s
            self.window_end = self._next_bucket_expiry()
        else:
            self.window_start, self.window_end = window_bounds(self.policy.window, self.anchor, now)

    def roll(self, now: float, events: list[Event]) -> None:
        """Bring the ledger into the window containing `now` (called when now >= window_end)."""
        if self.buckets is not None:
            self._age_buckets(now)
            self.refresh_levels(now, events)
            return
        if self.requests or self.has_window_counts():
            events.append(
                WindowRolledOver(
                    now,
                    self.policy.name,
                    self.key,
                    self.window_start,
                    self.window_end,
                    self.totals(),
                    self.label_map,
                )
            )
        self.clear_window()
        self._start_window(now)
        self.refresh_levels(now, events)

    def clear_window(self) -> None:
        """Zero what a window counts and re-arm its thresholds; open runs stay counted."""
        self.set_counts(_CLEARED, self.open_runs)
        self.fired &= _CONCURRENCY_BITS
        self.first_at = NO_TIME
        self.last_at = NO_TIME
        if self.buckets is not None:
            self.buckets.clear()

    def _next_bucket_expiry(self) -> float:
        buckets = self.buckets
        if not buckets:
            return math.inf
        return (buckets[0][0] + SLIDING_BUCKETS) * sliding_bucket_width(self.policy.window)

    def _age_buckets(self, now: float) -> None:
        buckets = self.buckets
        assert buckets is not None
        cutoff = int(now // sliding_bucket_width(self.policy.window)) - SLIDING_BUCKETS
        while buckets and buckets[0][0] <= cutoff:
            _, vector = buckets.popleft()
            self.subtract(vector)
        self.window_start = now - self.policy.window.duration_s
        self.window_end = self._next_bucket_expiry()

    def _bucket_for(self, now: float) -> list[int]:
        buckets = self.buckets
        assert buckets is not None
        index = int(now // sliding_bucket_width(self.policy.window))
        if buckets and buckets[-1][0] == index:
            return buckets[-1][1]
        vector = zero_vector()
        buckets.append((index, vector))
        if len(buckets) == 1:
            self.window_end = self._next_bucket_expiry()
        return vector

    def effective_used(self, now: float) -> list[int]:
        """The counters as they stand at `now`, without rolling (for read-only queries):
        a new vector."""
        used = self.counts()
        if now < self.window_end:
            return used
        if self.buckets is None:
            for i in WINDOWED_SLOTS:
                used[i] = 0
            return used
        cutoff = int(now // sliding_bucket_width(self.policy.window)) - SLIDING_BUCKETS
        for index, vector in self.buckets:
            if index > cutoff:
                break
            for i in WINDOWED_SLOTS:
                used[i] -= vector[i]
        return used

    # --- counting --------------------------------------------------------------------

    def add(self, delta: tuple[int, ...], now: float, events: list[Event]) -> None:
        """Record usage (a `usage_delta` vector) in this ledger."""
        record_usage((self,), delta, now, events)

    def add_to_bucket(self, delta: tuple[int, ...], now: float) -> None:
        bucket = self._bucket_for(now)
        for i in range(VECTOR_SIZE):
            bucket[i] += delta[i]

    def check_levels(self, now: float, events: list[Event]) -> None:
        """Fire what the counters reached (called after they grew)."""
        for k, (dimension, _) in enumerate(self.caps):
            if self.count(dimension) >= self.trigger(k):
                self._levels_changed(k, now, events)

    def trigger(self, k: int) -> int:
        """The count of cap `k`'s dimension at which its levels change next."""
        if k == 0:
            return self.trigger0
        if k == 1:
            return self.trigger1
        return self.more_triggers[k - 2]

    def _set_trigger(self, k: int, amount: int) -> None:
        if k == 0:
            self.trigger0 = amount
        elif k == 1:
            self.trigger1 = amount
        else:
            self.more_triggers[k - 2] = amount

    def reset_triggers(self) -> None:
        """Every trigger NEVER, one per cap (levels are then refreshed)."""
        self.trigger0 = NEVER
        self.trigger1 = NEVER
        extra = len(self.caps) - 2
        self.more_triggers = [NEVER] * extra if extra > 0 else NO_TRIGGERS

    def reached_past_first(self) -> bool:
        """Whether a cap but the first reached its trigger (record_usage's test)."""
        caps = self.caps
        if self.count(caps[1][0]) >= self.trigger1:
            return True
        more = self.more_triggers
        return any(self.count(caps[k][0]) >= more[k - 2] for k in range(2, len(caps)))

    # --- the counters ----------------------------------------------------------------

    def count(self, slot: int) -> int:
        """The counter of one slot of the vector (a Dimension, or an aggregate's index)."""
        if slot == 0:
            return self.total_tokens
        if slot == 1:
            return self.input_tokens
        if slot == 2:
            return self.output_tokens
        if slot == 3:
            return self.cost_micro_usd
        if slot == 4:
            return self.requests
        if slot == 5:
            return self.open_runs
        if slot == 6:
            return self.run_duration_ms
        if slot == 7:
            return self.cached_input_tokens
        if slot == 8:
            return self.unpriced_requests
        if slot == 9:
            return self.latency_us_sum
        if slot == 10:
            return self.latency_samples
        if slot == 11:
            return self.counted_wall_clock_ms
        if slot == 12:
            return self.cache_write_input_tokens
        if slot == 13:
            return self.reasoning_tokens
        if slot == 14:
            return self.unpriced_tokens
        raise IndexError(f"no counter slot {slot}")

    def counts(self) -> list[int]:
        """The counters as a vector (VECTOR_SIZE slots): a new list."""
        return [
            self.total_tokens,
            self.input_tokens,
            self.output_tokens,
            self.cost_micro_usd,
            self.requests,
            self.open_runs,
            self.run_duration_ms,
            self.cached_input_tokens,
            self.unpriced_requests,
            self.latency_us_sum,
            self.latency_samples,
            self.counted_wall_clock_ms,
            self.cache_write_input_tokens,
            self.reasoning_tokens,
            self.unpriced_tokens,
        ]

    def set_counts(self, vector: list[int], open_runs: int | None = None) -> None:
        """Set every counter from a vector (and the open runs from `open_runs`, when
        given, rather than from the vector)."""
        self.total_tokens = vector[0]
        self.input_tokens = vector[1]
        self.output_tokens = vector[2]
        self.cost_micro_usd = vector[3]
        self.requests = vector[4]
        self.run_duration_ms = vector[6]
        self.cached_input_tokens = vector[7]
        self.unpriced_requests = vector[8]
        self.latency_us_sum = vector[9]
        self.latency_samples = vector[10]
        self.counted_wall_clock_ms = vector[11]
        self.cache_write_input_tokens = vector[12]
        self.reasoning_tokens = vector[13]
        self.unpriced_tokens = vector[14]
        self.open_runs = vector[5] if open_runs is None else open_runs

    def same_counts(self, vector: list[int]) -> bool:
        """Whether the counters are those of `vector`."""
        return (
            self.total_tokens == vector[0]
            and self.input_tokens == vector[1]
            and self.output_tokens == vector[2]
            and self.cost_micro_usd == vector[3]
            and self.requests == vector[4]
            and self.open_runs == vector[5]
            and self.run_duration_ms == vector[6]
            and self.cached_input_tokens == vector[7]
            and self.unpriced_requests == vector[8]
            and self.latency_us_sum == vector[9]
            and self.latency_samples == vector[10]
            and self.counted_wall_clock_ms == vector[11]
            and self.cache_write_input_tokens == vector[12]
            and self.reasoning_tokens == vector[13]
            and self.unpriced_tokens == vector[14]
        )

    def has_window_counts(self) -> bool:
        """Whether a slot a window counts (all but open runs) is not zero."""
        return bool(
            self.total_tokens
            or self.input_tokens
            or self.output_tokens
            or self.cost_micro_usd
            or self.requests
            or self.run_duration_ms
            or self.cached_input_tokens
            or self.unpriced_requests
            or self.latency_us_sum
            or self.latency_samples
            or self.counted_wall_clock_ms
            or self.cache_write_input_tokens
            or self.reasoning_tokens
            or self.unpriced_tokens
        )

    def subtract(self, vector: list[int]) -> None:
        """Take a sliding-window bucket's counts (all but open runs) out of the counters."""
        self.total_tokens -= vector[0]
        self.input_tokens -= vector[1]
        self.output_tokens -= vector[2]
        self.cost_micro_usd -= vector[3]
        self.requests -= vector[4]
        self.run_duration_ms -= vector[6]
        self.cached_input_tokens -= vector[7]
        self.unpriced_requests -= vector[8]
        self.latency_us_sum -= vector[9]
        self.latency_samples -= vector[10]
        self.counted_wall_clock_ms -= vector[11]
        self.cache_write_input_tokens -= vector[12]
        self.reasoning_tokens -= vector[13]
        self.unpriced_tokens -= vector[14]

    # --- runs ------------------------------------------------------------------------

    def open_slot(self, now: float, events: list[Event]) -> None:
        self.open_runs += 1
        self._levels_of(CONCURRENCY, now, events)

    def close_slot(self, duration_ms: int, now: float, events: list[Event]) -> None:
        self.open_runs -= 1
        self.freed_at = now
        invariant(self.open_runs >= 0, f"{self.key}: open runs went negative")
        self.add_run_time(duration_ms, now)
        self._levels_of(CONCURRENCY, now, events)

    def add_run_time(self, duration_ms: int, now: float) -> None:
        self.run_duration_ms += duration_ms
        if self.buckets is not None:
            self._bucket_for(now)[RUN_DURATION] += duration_ms

    @property
    def idle(self) -> bool:
        """Nothing holds the ledger: no reservation and no open run."""
        return self.holds == 0 and self.open_runs == 0

    # --- thresholds and state --------------------------------------------------------

    def set_caps(
        self, caps: tuple[tuple[Dimension, int], ...], now: float, events: list[Event]
    ) -> None:
        """New caps: levels reached under them fire now; levels no longer reached re-arm
        (a threshold is an amount of a cap, and the amount changed)."""
        self.caps = caps
        self.reset_triggers()
        for k in range(len(caps)):
            self._levels_changed(k, now, events, rearm=True)
        if not caps:
            self.set_state(LedgerState.OK)

    def refresh_levels(self, now: float, events: list[Event]) -> None:
        for k in range(len(self.caps)):
            self._levels_changed(k, now, events)
        if not self.caps:
            self.set_state(LedgerState.OK)

    def _levels_of(self, dimension: Dimension, now: float, events: list[Event]) -> None:
        for k, (capped, _) in enumerate(self.caps):
            if capped == dimension:
                self._levels_changed(k, now, events)

    def _levels_changed(self, k: int, now: float, events: list[Event], rearm: bool = False) -> None:
        """Fire the levels cap `k` has reached for the first time this window; re-arm
        gauges (concurrency, sliding windows) that fell back; recompute state."""
        dimension, limit = self.caps[k]
        if dimension == RUN_DURATION:
            self._set_trigger(k, NEVER)
            return
        value = self.count(dimension)
        rearm = rearm or dimension == CONCURRENCY or self.buckets is not None
        base = dimension * 8
        fired = self.fired
        next_amount = NEVER
        policy = self.policy
        for level, threshold in enumerate(policy.thresholds):
            amount = trigger_amount(limit, threshold.percent)
            bit = 1 << (base + level)
            if value >= amount:
                if not fired & bit:
                    fired |= bit
                    events.append(
                        ThresholdCrossed(
                            now,
                            policy.name,
                            self.key,
                            dimension,
                            threshold.percent,
                            threshold.severity,
                            value,
                            limit,
                            self.remaining_of(dimension, limit),
                            self.label_map,
                        )
                    )
            else:
                if rearm:
                    fired &= ~bit
                next_amount = min(next_amount, amount)
        bit = 1 << (base + EXHAUSTION_LEVEL)
        amount = max(1, limit)
        if value >= amount:
            if not fired & bit:
                fired |= bit
                events.append(
                    LedgerExhausted(
                        now, policy.name, self.key, dimension, value, limit, self.label_map
                    )
                )
        else:
            if rearm:
                fired &= ~bit
            next_amount = min(next_amount, amount)
        self.fired = fired
        self._set_trigger(k, next_amount)
        self.set_state(self.compute_state(None))

    def set_state(self, state: LedgerState) -> None:
        brief = self.brief
        if state is not brief[1]:
            # What hot-path answers report per ledger, built once per change of state
            # rather than once per answer.
            self.brief = (brief[0], state)

    def compute_state(self, used: list[int] | None) -> LedgerState:
        """The state of counters `used` (None: the ledger's own)."""
        state = LedgerState.OK
        thresholds = self.policy.thresholds
        for dimension, limit in self.caps:
            if dimension == RUN_DURATION:
                continue
            value = self.count(dimension) if used is None else used[dimension]
            if value >= max(1, limit):
                return LedgerState.EXHAUSTED
            for threshold in thresholds:
                if value >= trigger_amount(limit, threshold.percent) and threshold.severity > state:
                    state = LedgerState(int(threshold.severity))
        return state

    # --- views -----------------------------------------------------------------------

    def totals(self, used: list[int] | None = None) -> Totals:
        return Totals.of(used if used is not None else self.counts(), self.first_use, self.last_use)

    def labels(self) -> dict[str, str]:
        """The ledger's labels, the one rule of every answer and event about it: the
        policy's exact `match` labels and the values of its `per` keys (defaults for
        missing ones included: they are the ident's values)."""
        policy = self.policy
        labels = {k: v for k, v in policy.match if v != "*"}
        if policy.per:
            labels.update(zip(policy.per, key_values(self.key, policy), strict=True))
        return labels

    def remaining_of(self, dimension: Dimension, limit: int) -> int:
        held = self.reserved[dimension] if dimension < HELD_SIZE else 0
        return max(0, limit - self.count(dimension) - held)

    def state_at(self, now: float) -> LedgerState:
        """`status(now).state` without building the status (a List filter's test)."""
        if now < self.window_end:
            return self.state
        return self.compute_state(self.effective_used(now))

    def status(self, now: float) -> LedgerStatus:
        used = self.effective_used(now)
        stale = now >= self.window_end
        dimensions = tuple(
            self._dimension_status(d, limit, used, now)
            for d, limit in self.caps
            if d != RUN_DURATION
        )
        run_limit = next((limit for d, limit in self.caps if d == RUN_DURATION), None)
        window_end = self.window_end
        if stale and self.buckets is None:
            start, window_end = window_bounds(self.policy.window, self.anchor, now)
        else:
            start = self.window_start
        first, last = (
            (None, None) if stale and self.buckets is None else (self.first_use, self.last_use)
        )
        return LedgerStatus(
            key=self.key,
            policy=self.policy.name,
            labels=self.label_map,
            state=self.compute_state(used) if stale else self.state,
            enforcement=self.policy.enforcement,
            dimensions=dimensions,
            totals=Totals.of(used, first, last),
            window_start=start,
            window_end=None if math.isinf(window_end) else window_end,
            open_runs=used[CONCURRENCY],
            reservations=self.holds,
            run_duration_limit_ms=run_limit,
        )

    def _dimension_status(
        self, dimension: Dimension, limit: int, used: list[int], now: float
    ) -> DimensionStatus:
        if dimension == WALL_CLOCK:
            elapsed = wall_clock_ms(self, now)
            return DimensionStatus(dimension, elapsed, 0, limit, window_end_of(self))
        held = self.reserved[dimension] if dimension < HELD_SIZE else 0
        back = None
        if used[dimension] and dimension != CONCURRENCY:
            back = returns_at(self, dimension, 1, now)
        return DimensionStatus(dimension, used[dimension], held, limit, back)

    @property
    def enforcement(self) -> Enforcement:
        return self.policy.enforcement


class StatusMemo:
    """A ledger's status and what it was built from. While none of that has changed and
    the window has not ended, the status is the same value, and the same object is the
    answer: building one costs ~7 us, and the transport serializes each object once.
    A wall-clock cap makes the status change with time alone: such a ledger has none."""

    __slots__ = (
        "caps",
        "first_at",
        "holds",
        "last_at",
        "ledger",
        "policy",
        "reserved",
        "state",
        "status",
        "used",
        "window_end",
        "window_start",
    )

    def __init__(self, ledger: Ledger, status: LedgerStatus) -> None:
        self.ledger = ledger
        self.status = status
        self.policy = ledger.policy
        self.caps = ledger.caps
        self.used = ledger.counts()
        reserved = ledger.reserved
        self.reserved = reserved if reserved is NO_HOLDS else list(reserved)
        self.holds = ledger.holds
        self.state = ledger.state
        self.first_at = ledger.first_at
        self.last_at = ledger.last_at
        self.window_start = ledger.window_start
        self.window_end = ledger.window_end

    def holds_for(self, ledger: Ledger, now: float) -> bool:
        """Whether `status` is still `ledger.status(now)`."""
        return (
            now < ledger.window_end
            and self.ledger is ledger
            and ledger.same_counts(self.used)
            and self.reserved == ledger.reserved
            and self.holds == ledger.holds
            and self.state == ledger.state
            and self.caps is ledger.caps
            and self.policy is ledger.policy
            and self.first_at == ledger.first_at
            and self.last_at == ledger.last_at
            and self.window_start == ledger.window_start
            and self.window_end == ledger.window_end
        )


def memoizable(ledger: Ledger, now: float) -> bool:
    """A status that depends on the ledger's fields alone (see StatusMemo)."""
    return now < ledger.window_end and all(d != WALL_CLOCK for d, _ in ledger.caps)


def wall_clock_ms(ledger: Ledger, now: float) -> int:
    """How long the ledger's window has lasted at `now` (lifetime: since first use)."""
    if ledger.buckets is not None:
        return 0
    end = ledger.window_end
    if not math.isfinite(end):
        start = ledger.first_use
    elif now >= end:  # not rolled yet (a Check rolls nothing): the window `now` is in
        start = window_bounds(ledger.policy.window, ledger.anchor, now)[0]
    else:
        start = ledger.window_start
    if start is None or now < start:
        return 0
    return int((now - start) * 1000)


def window_end_of(ledger: Ledger) -> float | None:
    end = ledger.window_end
    return end if math.isfinite(end) and ledger.buckets is None else None


def returns_at(ledger: Ledger, dimension: Dimension, need: int, now: float) -> float | None:
    """When `need` units of `dimension` come back to the ledger by time alone: its
    window's end (calendar, fixed), the ageing of enough sliding-window usage, or None
    (lifetime; reservations hold what is needed)."""
    buckets = ledger.buckets
    if buckets is None:
        return window_end_of(ledger)
    if need > ledger.count(dimension):
        return None  # what is held by reservations does not age out
    width = sliding_bucket_width(ledger.policy.window)
    freed = 0
    for index, vector in buckets:
        freed += vector[dimension]
        if freed >= need:
            return max(now, (index + SLIDING_BUCKETS) * width)
    return None


def hold(ledgers: Iterable[Ledger], amounts: tuple[int, ...]) -> None:
    """Hold a reservation's amounts (HELD_SIZE) in every ledger it was granted in."""
    for ledger in ledgers:
        reserved = ledger.reserved
        if reserved is NO_HOLDS:  # its first hold: a list of its own
            ledger.reserved = list(amounts)
        else:
            reserved[0] += amounts[0]
            reserved[1] += amounts[1]
            reserved[2] += amounts[2]
            reserved[3] += amounts[3]
            reserved[4] += amounts[4]
        ledger.holds += 1


def release(ledgers: Iterable[Ledger], amounts: tuple[int, ...]) -> None:
    """Undo `hold` (a commit, release or expiry)."""
    for ledger in ledgers:
        reserved = ledger.reserved
        holds = ledger.holds - 1
        # With no hold left nothing may stay reserved (the ledger goes back to the shared
        # NO_HOLDS); otherwise a hold was released twice or for the wrong amounts.
        if holds > 0 and reserved is not NO_HOLDS:
            reserved[0] -= amounts[0]
            reserved[1] -= amounts[1]
            reserved[2] -= amounts[2]
            reserved[3] -= amounts[3]
            reserved[4] -= amounts[4]
        elif (
            holds < 0
            or reserved is NO_HOLDS
            or reserved[0] != amounts[0]
            or reserved[1] != amounts[1]
            or reserved[2] != amounts[2]
            or reserved[3] != amounts[3]
            or reserved[4] != amounts[4]
        ):
            raise InvariantBroken(f"{ledger.key}: holds released do not match holds granted")
        else:
            ledger.reserved = NO_HOLDS
        ledger.holds = holds


def record_usage(
    ledgers: Iterable[Ledger],
    delta: tuple[int, ...],
    now: float,
    events: list[Event],
) -> None:
    """Add one usage record (a `usage_delta` vector) to every ledger it belongs to.

    The hot path of Consume and Commit, written as one loop with the increments in local
    variables: slots 5, 6 and 11 (open runs, run time, wall clock) never come from a
    usage record, and the optional aggregates are skipped when zero. Windows must be
    current (rolled).
    """
    # One unpacking, no slices: nothing is allocated per call.
    (
        total,
        input_tokens,
        output_tokens,
        cost,
        requests,
        _,
        _,
        cached,
        unpriced,
        latency,
        samples,
        _,
        written,
        reasoning,
        unpriced_tokens,
    ) = delta
    for ledger in ledgers:
        ledger.total_tokens += total
        ledger.input_tokens += input_tokens
        ledger.output_tokens += output_tokens
        ledger.cost_micro_usd += cost
        ledger.requests += requests
        if cached:
            ledger.cached_input_tokens += cached
        if unpriced:
            ledger.unpriced_requests += unpriced
            ledger.unpriced_tokens += unpriced_tokens
        if samples:
            ledger.latency_us_sum += latency
            ledger.latency_samples += samples
        if written:
            ledger.cache_write_input_tokens += written
        if reasoning:
            ledger.reasoning_tokens += reasoning
        if ledger.first_at == NO_TIME:
            ledger.first_at = now
        ledger.last_at = now
        if ledger.buckets is not None:
            ledger.add_to_bucket(delta, now)
        caps = ledger.caps
        # Ledger.check_levels, inlined: most calls reach no trigger.
        if caps and (
            ledger.count(caps[0][0]) >= ledger.trigger0
            or (len(caps) > 1 and ledger.reached_past_first())
        ):
            ledger.check_levels(now, events)


# --- keys ------------------------------------------------------------------------------

_ESCAPES = {"%": "%25", ",": "%2C", "=": "%3D", "{": "%7B", "}": "%7D"}


def _escape(value: str) -> str:
    if "%" in value or "," in value or "=" in value or "{" in value or "}" in value:
        for raw, escaped in _ESCAPES.items():
            if raw in value:
                value = value.replace(raw, escaped)
    return value


def text_bytes(text: str) -> int:
    """UTF-8 bytes of `text` (labels may carry lone surrogates: they count as 3)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def key_of(policy: Policy, labels: Mapping[str, str]) -> str:
    """The key of `policy`'s ledger for `labels` (which it matches, or which name every
    per key): `format_key` of its ident, built without one for a single per key."""
    per_defaults = policy.per_defaults
    if not per_defaults:
        return policy.name
    if len(per_defaults) == 1:
        key, default = per_defaults[0]
        return f"{policy.key_prefix}{_escape(labels.get(key, default))}}}"
    values = [labels.get(key, default) for key, default in per_defaults]
    return format_key((policy.name, *values), policy.per)


def key_text_bytes(key: str, policy: Policy) -> int:
    """`ledger_text_bytes` of `policy`'s ledger `key`."""
    size = text_bytes(key)
    if policy.per:
        for value in key_values(key, policy):
            size += text_bytes(value)
    return size


def key_values(key: str, policy: Policy) -> tuple[str, ...]:
    """The values of `policy`'s per keys in a key `format_key` made for it (the inverse
    the ledgers use instead of keeping their values beside their key)."""
    per = policy.per
    if not per:
        return ()
    if len(per) == 1:  # `name{key=value}`
        value = key[len(policy.name) + len(per[0]) + 2 : -1]
        return (_unescape(value) if "%" in value else value,)
    parsed = parse_key(key)
    if parsed is None or parsed[0] != policy.name or len(parsed[1]) != len(per):
        raise InvariantBroken(f"{key}: not a key of policy {policy.name!r}")
    values = parsed[1]
    return tuple([values[k] for k in per])


def ledger_text_bytes(ident: Ident, key: str) -> int:
    """The text a ledger holds of its own: its key and its per-key values (its labels'
    other strings are the policy's, shared by all its ledgers)."""
    size = text_bytes(key)
    for value in ident[1:]:
        size += text_bytes(value)
    return size


def format_key(ident: Ident, per: tuple[str, ...]) -> str:
    """`policy{k=v,...}` in the policy's per-key order; `policy` for a shared ledger."""
    if not per:
        return ident[0]
    inner = ",".join(f"{k}={_escape(v)}" for k, v in zip(per, ident[1:], strict=True))
    return f"{ident[0]}{{{inner}}}"


def parse_key(key: str) -> tuple[str, dict[str, str]] | None:
    """The inverse of `format_key`, or None when `key` is not of that shape."""
    if "{" not in key:
        return (key, {}) if key else None
    name, _, rest = key.partition("{")
    if not name or not rest.endswith("}"):
        return None
    values: dict[str, str] = {}
    body = rest[:-1]
    for pair in body.split(",") if body else []:
        k, sep, v = pair.partition("=")
        if not sep or k in values:
            return None
        values[k] = _unescape(v)
    return name, values


def _unescape(value: str) -> str:
    """The inverse of `_escape`."""
    for raw, escaped in _ESCAPES.items():
        value = value.replace(escaped, raw) if raw != "%" else value
    return value.replace("%25", "%")
