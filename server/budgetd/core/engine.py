"""The ledger engine: every budget operation, atomic and synchronous.

Each public operation validates its arguments, checks every bound that could make it
fail, and only then changes state, so an operation either applies to every matching
ledger or to none. Time is an argument (`now`, POSIX seconds); the engine never reads a
clock and never does I/O. Each mutation returns its result and the events it caused,
and is reported to `recorder` (when set) as a replayable `Mutation`.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from operator import attrgetter
from typing import Any, Final, TypeVar

from budgetd.core import state
from budgetd.core.decisions import (
    collect_blockers,
    crossings,
    decide,
    duration_blocker,
    overruns,
    usage_delta,
)
from budgetd.core.default_prices import default_price_table
from budgetd.core.digest import NO_PAIRS, Fingerprint, Remembrance, differs, digest_of
from budgetd.core.dimensions import (
    DIMENSION_NAMES,
    HELD_SIZE,
    VECTOR_SIZE,
    Dimension,
)
from budgetd.core.errors import Conflict, InvalidArgument, LimitReached, NotFound
from budgetd.core.events import (
    Blocker,
    Denied,
    Event,
    LedgerClosed,
    LedgerClosedReason,
    PolicyChanged,
    ReservationExpired,
    RunEnded,
    RunEndReason,
    RunOpened,
    Totals,
    UsageRecorded,
)
from budgetd.core.ledger import (
    Ledger,
    StatusMemo,
    format_key,
    hold,
    key_of,
    key_text_bytes,
    key_values,
    memoizable,
    parse_key,
    record_usage,
    release,
    text_bytes,
)
from budgetd.core.limits import Limits
from budgetd.core.mutations import MUTATING_OPS, Mutation
from budgetd.core.policy import Enforcement, LedgerState, Policy, parse_caps
from budgetd.core.prices import PriceTable
from budgetd.core.records import (
    Deadline,
    EndedRun,
    ExpiredHold,
    Remembered,
    Reservation,
    Run,
)
from budgetd.core.results import (
    CheckResult,
    CloseRunResult,
    CommitResult,
    ConsumeResult,
    Decision,
    DeletePolicyResult,
    HeartbeatResult,
    LedgerPage,
    LedgerStatus,
    OpenRunResult,
    PutPolicyResult,
    ReleaseResult,
    ReplacePoliciesResult,
    ReserveResult,
    ResetResult,
    Result,
    RunInfo,
    RunPage,
)
from budgetd.core.shares import DEFAULT_MAX_SLICE_FRACTION, Shares, view
from budgetd.core.usage import EdgeRules, Labels, Usage

R = TypeVar("R", bound=Result)
T = TypeVar("T")
Outcome = tuple[T, list[Event]]
# A request's labels (in the caller's order) and its usage's model and provider.
RouteKey = tuple[tuple[tuple[str, str], ...], str, str]
# What those resolved to: under which policy epoch, the subject, the ledgers.
# (The key itself is kept too: requests remember it, so equal label sets share one.)
# Last, the UTF-8 bytes of the key's labels: what the memo and remembered requests hold.
Route = tuple[int, Labels, tuple[Ledger, ...], RouteKey, int]

CONCURRENCY: Final = Dimension.CONCURRENCY
RUN_DURATION: Final = Dimension.RUN_DURATION_MS
WALL_CLOCK: Final = Dimension.WALL_CLOCK_MS
COST: Final = Dimension.COST_MICRO_USD
NO_AMOUNTS = (0,) * HELD_SIZE
NO_RUN: tuple[object, ...] = ("",)  # a Consume's other arguments: no run_id
ALLOW: Final = Decision.ALLOW
SHADOW: Final = Enforcement.SHADOW
BRIEF = attrgetter("brief")  # a ledger's (key, state)
# Ledger statuses remembered for the next Check or GetLedger (Engine._status).
STATUS_MEMO_ENTRIES = 4096
SERIAL = attrgetter("serial")
# What one remembered answer costs beyond its id and label text, in bytes: measured with
# tracemalloc (895 bytes per Consume touching four ledgers with a 36-character id, 1,010
# per Reserve or Commit: the Usage, the result, the fingerprint, the dict and deque
# slots). A fixed figure, not a measure of each entry: the count must be the same in a
# live engine and in one replayed from its journal.
ANSWER_BYTES = 900
# Where a policy came from: the config file (replaced by a reload) or the admin API (kept).
FROM_FILE = "file"
FROM_API = "api"


class Engine:
    """All ledgers, holds, runs and idempotency memory of one budgetd instance."""

    def __init__(
        self,
        policies: Iterable[Policy] = (),
        *,
        limits: Limits | None = None,
        prices: PriceTable | None = None,
        id_prefix: str = "res-",
        global_enabled: bool = False,
        max_slice_fraction: float = DEFAULT_MAX_SLICE_FRACTION,
    ) -> None:
        self.limits = limits or Limits()
        # Global policies need a sidecar connected to Redis (the daemon's [global]).
        self.global_enabled = global_enabled
        self.max_slice_fraction = max_slice_fraction
        self.rules = EdgeRules(self.limits)
        self.prices = prices or default_price_table()
        self.recorder: Callable[[Mutation], None] | None = None
        self._id_prefix = id_prefix
        self._policies: dict[str, Policy] = {}
        self._origins: dict[str, str] = {}  # policy name -> FROM_FILE or FROM_API
        self._policy_list: tuple[Policy, ...] = ()
        # Ledgers by key (`policy{k=v,...}`, unique across policies): the key is the one
        # string a ledger keeps of its own (its answers carry it).
        self._ledgers: dict[str, Ledger] = {}
        self._status_memo: dict[str, StatusMemo] = {}
        self._label_bytes = 0  # sum of the ledgers' label_bytes (limits.max_label_bytes)
        # Ledgers in creation order (serials ascending), for pagination and eviction; dead
        # entries are skipped and compacted away once they are half of the list.
        self._chrono: list[Ledger] = []
        self._dead = 0
        self._serial = 0
        self._hand = 0
        self._window_heap: list[float] = []
        self._window_due: dict[float, list[Ledger]] = {}
        self._reservations: dict[str, Reservation] = {}
        self._reservation_heap: list[tuple[float, str]] = []
        self._reservation_count = 0
        self._expired_holds: OrderedDict[str, ExpiredHold] = OrderedDict()
        self._runs: dict[str, Run] = {}
        self._run_order: list[str] = []  # open run ids, sorted: ListRuns pages by id
        self._run_heap: list[tuple[float, str]] = []
        self._ended_runs: OrderedDict[str, EndedRun] = OrderedDict()
        # Answers by request_id, and the ids oldest first. A plain dict and a deque: the
        # memory is large and touched on every mutation, and this pair costs less per
        # insert-and-evict than an OrderedDict.
        self._done: dict[str, Remembered] = {}
        self._done_order: deque[str] = deque()
        self._done_bytes = 0  # what the entries count (limits.idempotency_max_bytes)
        self._routes: OrderedDict[RouteKey, Route] = OrderedDict()
        self._route_bytes = 0  # label text of the memo's keys
        # Bumped whenever a ledger may have become evictable (a hold or run let go, a
        # policy changed); `_make_room` skips a full scan that cannot find enough:
        # (`_freed` when it ran, how many ledgers and label bytes it could evict).
        self._freed = 0
        self._full_scan = (-1, 0, 0)
        # Ledgers of policies with an idle ttl, by when they may next be idle long enough.
        self._idle_heap: list[tuple[float, int, str]] = []
        # Bumped by every policy change: a hold made under another epoch re-resolves.
        self._epoch = 0
        # Ledgers created so far, by policy name (replays included): read by telemetry.
        self.ledgers_created: dict[str, int] = {}
        self.shares = Shares(self._ledgers)  # of the global policies' ledgers
        for policy in policies:
            self._install(self._validated(policy), FROM_FILE)

    # ==================================================================================
    # Queries
    # ==================================================================================

    @property
    def policies(self) -> tuple[Policy, ...]:
        return self._policy_list

    def policies_by_name(self) -> Mapping[str, Policy]:
        return self._policies

    def validated_policy(self, policy: Policy) -> Policy:
        """`policy` as a put would store it, checked by the same rules (changes nothing)."""
        policy = self._validated(policy)
        if policy.name not in self._policies and len(self._policies) >= self.limits.max_policies:
            raise LimitReached("max_policies", self.limits.max_policies)
        return policy

    def origin(self, name: str) -> str:
        """Where policy `name` came from: FROM_FILE or FROM_API."""
        self.policy(name)
        return self._origins[name]

    def policy(self, name: str) -> Policy:
        policy = self._policies.get(name)
        if policy is None:
            raise NotFound("policy", name)
        return policy

    @property
    def ledger_count(self) -> int:
        return len(self._ledgers)

    @property
    def reservation_count(self) -> int:
        return len(self._reservations)

    @property
    def run_count(self) -> int:
        return len(self._runs)

    @property
    def label_bytes(self) -> int:
        """What the ledgers count against `limits.max_label_bytes`."""
        return self._label_bytes

    @property
    def remembered_requests(self) -> int:
        return len(self._done)

    @property
    def remembered_request_bytes(self) -> int:
        """What the remembered requests count against `limits.idempotency_max_bytes`."""
        return self._done_bytes

    def idempotency_window(self, now: float) -> float:
        """How far back, in seconds, a retry is recognised at `now`: the age of the
        oldest request id remembered (ids are forgotten oldest first), at most
        `limits.idempotency_max_age_s`; 0 when none is remembered."""
        order = self._done_order
        if not order:
            return 0.0
        age = now - self._done[order[0]].at
        return max(0.0, min(age, self.limits.idempotency_max_age_s))

    def run_totals(self, run_id: str) -> Totals:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFound("run", run_id)
        return Totals.of(run.totals, run.first_use, run.last_use)

    def reservation_labels(self, reservation_id: str) -> Mapping[str, str] | None:
        """The labels of a held (or expired, still committable) reservation; None when
        the id holds nothing. For access checks: the core itself never needs it."""
        reservation = self._reservations.get(reservation_id)
        if reservation is not None:
            return reservation.labels
        expired = self._expired_holds.get(reservation_id)
        return expired.labels if expired is not None else None

    def run_labels(self, run_id: str) -> Mapping[str, str] | None:
        """The labels of an open run, or of one remembered as ended; None when the id
        names neither."""
        run = self._runs.get(run_id)
        if run is not None:
            return run.labels
        ended = self._ended_runs.get(run_id)
        return ended.labels if ended is not None else None

    def check(self, labels: Labels, estimate: Usage, now: float, run_id: str = "") -> CheckResult:
        """Would `estimate` fit in every matching ledger? Changes nothing."""
        self.rules.labels(labels)
        _agrees_with_usage(labels, estimate, "estimate")
        self.rules.usage(estimate, "estimate")
        run_blocker = self._run_gate(run_id, now)
        subject = self.subject_of(labels, estimate)
        cost = self.prices.cost_of(estimate)
        unpriced_model = estimate.model if cost is None else None
        amounts = usage_delta(estimate, cost)[:HELD_SIZE]
        statuses: list[LedgerStatus] = []
        blockers: list[Blocker] = []
        warnings: list[Blocker] = []
        warn = False
        for policy in self._matching(subject):
            ledger_key = key_of(policy, subject)
            ledger = self._ledgers.get(ledger_key)
            if ledger is None:
                ledger = Ledger(ledger_key, policy, now, -1)
                status = ledger.status(now)
            else:
                status = self._status(ledger, now)
            statuses.append(status)
            # (None: its own counters, current; a window that ended counts as rolled.)
            used = ledger.effective_used(now) if now >= ledger.window_end else None
            if status.state and status.enforcement is not SHADOW:
                warn = True
            collect_blockers(
                ledger,
                used,
                amounts,
                blockers,
                warnings,
                now,
                unpriced_model=unpriced_model,
                share=self.shares.of(ledger) if policy.is_global else None,
            )
        if run_blocker is not None:
            (blockers if run_blocker.enforcement is Enforcement.HARD else warnings).append(
                run_blocker
            )
        return CheckResult(
            decide(blockers, warnings, warn),
            tuple(statuses),
            tuple(blockers),
            tuple(warnings),
            cost,
        )

    def get_ledger(self, key: str, now: float) -> LedgerStatus:
        return self._status(self._ledger_by_key(key), now)

    def _status(self, ledger: Ledger, now: float) -> LedgerStatus:
        """A kept ledger's status: the same object as last time while it is unchanged
        (StatusMemo), from a memo bounded by STATUS_MEMO_ENTRIES."""
        if ledger.policy.is_global:  # its share changes apart from its counters
            return self._global_status(ledger, now)
        memos = self._status_memo
        memo = memos.get(ledger.key)
        if memo is not None and memo.holds_for(ledger, now):
            return memo.status
        status = ledger.status(now)
        if memoizable(ledger, now):
            if len(memos) >= STATUS_MEMO_ENTRIES:
                memos.clear()  # the ledgers in use fill it again within a few calls
            memos[ledger.key] = StatusMemo(ledger, status)
        return status

    def _global_status(self, ledger: Ledger, now: float) -> LedgerStatus:
        status = ledger.status(now)
        share = self.shares.of(ledger)
        if share is not None:
            status.share = view(share, ledger.counts(), ledger.caps, self.max_slice_fraction, now)
        return status

    def list_ledgers(
        self,
        now: float,
        *,
        policy: str = "",
        selector: Mapping[str, str] | None = None,
        min_state: LedgerState = LedgerState.OK,
        page_size: int = 100,
        page_token: str = "",
    ) -> LedgerPage:
        """Ledgers in creation order, filtered. At most `limits.list_scan_per_page`
        ledgers are looked at, matching or not: a page may hold fewer than `page_size`
        ledgers, or none, while `next_page_token` is set (it continues the scan)."""
        if not 0 < page_size <= self.limits.max_page_size:
            raise InvalidArgument("page_size", f"must be in 1..{self.limits.max_page_size}")
        if selector:
            self.rules.labels(selector, "selector")
        after = -1
        if page_token:
            # ASCII only: str.isdigit() also accepts "²" and "١٢", which int() refuses.
            if not (page_token.isascii() and page_token.isdigit()) or len(page_token) > 20:
                raise InvalidArgument("page_token", "not a token this server returned")
            after = int(page_token)
        chrono = self._chrono
        start = bisect_right(chrono, after, key=lambda ledger: ledger.serial)
        found: list[LedgerStatus] = []
        scan_end = min(len(chrono), start + self.limits.list_scan_per_page)
        last = after
        for index in range(start, scan_end):
            ledger = chrono[index]
            last = ledger.serial
            if not ledger.alive or (policy and ledger.policy.name != policy):
                continue
            if selector and not _selected(ledger, selector):
                continue
            if min_state and ledger.state_at(now) < min_state:
                continue  # (building the status of each ledger scanned costs 20x more)
            found.append(ledger.status(now))
            if len(found) == page_size:
                break
        more = last < chrono[-1].serial if chrono else False
        return LedgerPage(tuple(found), str(last) if more else "")

    def list_runs(
        self,
        *,
        selector: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> RunPage:
        """Open runs by run id, filtered by labels. As with `list_ledgers`, at most
        `limits.list_scan_per_page` runs are looked at: a page may be short, or empty,
        while `next_page_token` (the last id looked at) is set."""
        if not 0 < page_size <= self.limits.max_page_size:
            raise InvalidArgument("page_size", f"must be in 1..{self.limits.max_page_size}")
        if selector:
            self.rules.labels(selector, "selector")
        if len(page_token) > self.limits.max_request_id_chars:
            raise InvalidArgument("page_token", "not a token this server returned")
        ids = self._run_order
        found: list[RunInfo] = []
        index = bisect_right(ids, page_token) if page_token else 0
        scan_end = min(len(ids), index + self.limits.list_scan_per_page)
        while index < scan_end and len(found) < page_size:
            run = self._runs[ids[index]]
            index += 1
            if selector and any(run.labels.get(k) != v for k, v in selector.items()):
                continue
            hard = run.hard_deadline
            found.append(
                RunInfo(
                    run.id,
                    dict(run.labels),
                    run.opened_at,
                    run.last_seen,
                    run.expires_at,
                    hard.at if hard is not None else None,
                    Totals.of(run.totals, run.first_use, run.last_use),
                )
            )
        more = index < len(ids)
        return RunPage(tuple(found), ids[index - 1] if more else "")

    # ==================================================================================
    # Hot path: reserve, commit, release, consume
    # ==================================================================================

    def reserve(
        self,
        labels: Labels,
        estimate: Usage,
        ttl_s: float,
        request_id: str,
        now: float,
        run_id: str = "",
    ) -> Outcome[ReserveResult]:
        """Hold `estimate` in every matching ledger, or deny and hold nothing."""
        prior = self._done.get(request_id)
        if prior is not None:
            return self._replay(
                prior,
                "reserve",
                ReserveResult,
                (tuple(labels.items()), estimate, (ttl_s, run_id)),
            )
        rules = self.rules
        rules.identifier(request_id, "request_id")
        key, route = self._checked_route(labels, estimate, "estimate")
        if not 0 < ttl_s <= self.limits.max_reservation_ttl_s:
            rules.ttl(ttl_s, self.limits.max_reservation_ttl_s, "ttl")
        if len(self._reservations) >= self.limits.max_reservations:
            raise LimitReached("max_reservations", self.limits.max_reservations)
        run_blocker = self._run_gate(run_id, now) if run_id else None
        events: list[Event] = []
        subject, ledgers, text = self._route(key, route, labels, estimate, now, events)
        cost = self.prices.cost_of(estimate)
        amounts = (
            estimate.input_tokens + estimate.output_tokens,
            estimate.input_tokens,
            estimate.output_tokens,
            0 if cost is None else cost,
            1,
        )
        blockers: list[Blocker] = []
        warnings: list[Blocker] = []
        warn = False
        unpriced = cost is None
        for ledger in ledgers:
            caps = ledger.caps
            if caps:
                policy = ledger.policy
                if ledger.state and policy.enforcement is not SHADOW:
                    warn = True  # WARNING or worse in a ledger that enforces
                reserved = ledger.reserved
                for dimension, limit in caps:  # fits: one unit of headroom at least
                    if (
                        (
                            dimension < CONCURRENCY
                            and (
                                ledger.count(dimension)
                                + reserved[dimension]
                                + (amounts[dimension] or 1)
                                > limit
                                or (unpriced and dimension == COST and not policy.unpriced_allowed)
                            )
                        )
                        or dimension == WALL_CLOCK
                        or policy.is_global
                    ):
                        collect_blockers(
                            ledger,
                            None,
                            amounts,
                            blockers,
                            warnings,
                            now,
                            unpriced_model=estimate.model if unpriced else None,
                            share=self.shares.of(ledger) if policy.is_global else None,
                        )
                        break
        if run_blocker is not None:
            (blockers if run_blocker.enforcement is Enforcement.HARD else warnings).append(
                run_blocker
            )
        decision = decide(blockers, warnings, warn) if blockers or warnings or warn else ALLOW
        if blockers or warnings:
            for blocker in (*blockers, *warnings):
                events.append(Denied(now, subject, blocker, request_id, run_id))
        briefs = tuple(map(BRIEF, ledgers))
        if decision is Decision.DENY:
            result = ReserveResult(
                decision, "", None, briefs, tuple(blockers), tuple(warnings), cost
            )
        else:
            expires_at = now + ttl_s
            reservation_id = self._hold(
                labels, subject, estimate, amounts, ledgers, expires_at, run_id, now
            )
            result = ReserveResult(
                decision, reservation_id, expires_at, briefs, (), tuple(warnings), cost
            )
        if decision is not Decision.DENY or not waits_for_lease(blockers):
            self._remember(
                request_id,
                "reserve",
                now,
                result,
                (key[0], estimate, (ttl_s, run_id)),
                text,
            )
        if self.recorder is not None:
            self._record(
                "reserve",
                now,
                labels=labels,
                estimate=estimate,
                ttl_s=ttl_s,
                request_id=request_id,
                run_id=run_id,
            )
        return result, events

    def _hold(
        self,
        labels: Labels,
        subject: Labels,
        estimate: Usage,
        amounts: tuple[int, ...],
        ledgers: tuple[Ledger, ...],
        expires_at: float,
        run_id: str,
        now: float,
    ) -> str:
        """Hold `amounts` in every ledger and record the reservation; returns its id."""
        hold(ledgers, amounts)
        heap = self._reservation_heap
        if len(heap) > 2 * len(self._reservations) + 1024:
            # Committed and released holds leave their entries behind; drop them.
            heap[:] = [(r.expires_at, r.id) for r in self._reservations.values()]
            heapq.heapify(heap)
        self._reservation_count += 1
        reservation_id = f"{self._id_prefix}{self._reservation_count}"
        self._reservations[reservation_id] = Reservation(
            reservation_id,
            dict(labels),
            estimate,
            amounts,
            ledgers,
            expires_at,
            run_id,
            now,
            self._epoch,
            subject,
        )
        heapq.heappush(heap, (expires_at, reservation_id))
        return reservation_id

    def commit(
        self, reservation_id: str, actual: Usage, request_id: str, now: float
    ) -> Outcome[CommitResult]:
        """Replace a hold by the actual usage, which is recorded even when larger.

        An `actual` without a model or provider takes the estimate's.
        """
        # Of the arguments as given (the model and provider may be filled in below).
        fingerprint: Fingerprint = (NO_PAIRS, actual, (reservation_id,))
        prior = self._done.get(request_id)
        if prior is not None:
            return self._replay(prior, "commit", CommitResult, fingerprint)
        rules = self.rules
        rules.identifier(request_id, "request_id")
        rules.usage(actual, "actual")
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            rules.identifier(reservation_id, "reservation_id")
        if reservation is not None:
            labels, run_id, estimate = (
                reservation.labels,
                reservation.run_id,
                reservation.estimate,
            )
        else:
            expired = self._expired_holds.get(reservation_id)
            if expired is None:
                raise uncommittable(reservation_id)
            labels, run_id, estimate = expired.labels, expired.run_id, expired.estimate
        if (not actual.model and estimate.model) or (not actual.provider and estimate.provider):
            # The usage of a call made with the model reserved for, unless it says otherwise.
            actual = replace(
                actual,
                model=actual.model or estimate.model,
                provider=actual.provider or estimate.provider,
            )
        events: list[Event] = []
        cost = self.prices.cost_of(actual)
        delta = usage_delta(actual, cost)
        ledgers: Sequence[Ledger]
        if (
            reservation is not None
            and reservation.epoch == self._epoch
            and actual.model == estimate.model
            and actual.provider == estimate.provider
        ):
            # Same policies, same subject: the ledgers holding the estimate are exactly
            # the ones the usage belongs to (none can have closed: held ledgers are busy).
            subject = reservation.subject
            ledgers = reservation.ledgers
            del self._reservations[reservation_id]
            for ledger in ledgers:
                if now >= ledger.window_end:
                    self._roll(ledger, now, events)
                    self._schedule_roll(ledger)
            self._let_go(ledgers, reservation.amounts)
            record_usage(ledgers, delta, now, events)
        else:
            subject = self.subject_of(labels, actual)
            ledgers = self._resolve(subject, now, events)
            # Nothing below can fail: the operation now applies in full.
            if reservation is not None:
                self._drop_reservation(reservation, now)
            else:
                del self._expired_holds[reservation_id]
            record_usage(ledgers, delta, now, events)
        if run_id:
            self._attribute(run_id, delta, now)
        held = (
            reservation.amounts
            if reservation is not None
            else usage_delta(estimate, self.prices.cost_of(estimate))[:HELD_SIZE]
        )
        over = delta[0] > held[0] or delta[1] > held[1] or delta[2] > held[2] or delta[3] > held[3]
        briefs = tuple(map(BRIEF, ledgers))
        result = CommitResult(
            briefs,
            crossings(events),
            overruns(held, delta) if over else (),
            cost,
            reservation is None,
        )
        events.append(UsageRecorded(now, subject, request_id, run_id, actual, cost, briefs))
        self._remember(request_id, "commit", now, result, fingerprint)
        if self.recorder is not None:
            self._record(
                "commit", now, reservation_id=reservation_id, actual=actual, request_id=request_id
            )
        return result, events

    def release(self, reservation_id: str, request_id: str, now: float) -> Outcome[ReleaseResult]:
        """Drop a hold without recording usage."""
        prior = self._done.get(request_id)
        if prior is not None:
            return self._replay(
                prior, "release", ReleaseResult, (NO_PAIRS, None, (reservation_id,))
            )
        self.rules.identifier(request_id, "request_id")
        self.rules.identifier(reservation_id, "reservation_id")
        reservation = self._reservations.get(reservation_id)
        if reservation is not None:
            self._drop_reservation(reservation, now)
            result = ReleaseResult(released=True)
        elif reservation_id in self._expired_holds:
            del self._expired_holds[reservation_id]
            result = ReleaseResult(released=False)
        else:
            raise NotFound("reservation", reservation_id)
        self._remember(request_id, "release", now, result, (NO_PAIRS, None, (reservation_id,)))
        self._record("release", now, reservation_id=reservation_id, request_id=request_id)
        return result, []

    def consume(
        self, labels: Labels, usage: Usage, request_id: str, now: float, run_id: str = ""
    ) -> Outcome[ConsumeResult]:
        """Record usage that already happened: always, even past a cap."""
        prior = self._done.get(request_id)
        if prior is not None:
            return self._replay(
                prior, "consume", ConsumeResult, (tuple(labels.items()), usage, (run_id,))
            )
        rules = self.rules
        rules.identifier(request_id, "request_id")
        key, route = self._checked_route(labels, usage, "usage")
        if run_id:
            rules.identifier(run_id, "run_id")
        events: list[Event] = []
        subject, ledgers, text = self._route(key, route, labels, usage, now, events)
        cost = self.prices.cost_of(usage)
        delta = usage_delta(usage, cost)
        record_usage(ledgers, delta, now, events)
        if run_id:
            self._attribute(run_id, delta, now)
        briefs = tuple(map(BRIEF, ledgers))
        result = ConsumeResult(briefs, crossings(events), cost)
        events.append(UsageRecorded(now, subject, request_id, run_id, usage, cost, briefs))
        extras = (run_id,) if run_id else NO_RUN  # (shared: most calls name no run)
        self._remember(request_id, "consume", now, result, (key[0], usage, extras), text)
        if self.recorder is not None:
            self._record(
                "consume", now, labels=labels, usage=usage, request_id=request_id, run_id=run_id
            )
        return result, events

    # ==================================================================================
    # Runs
    # ==================================================================================

    def open_run(
        self, labels: Labels, run_id: str, ttl_s: float, request_id: str, now: float
    ) -> Outcome[OpenRunResult]:
        """Take a concurrency slot in every matching ledger, or deny and take none."""
        prior = self._done.get(request_id)
        if prior is not None:
            return self._replay(
                prior,
                "open_run",
                OpenRunResult,
                (tuple(labels.items()), None, (run_id, ttl_s)),
            )
        rules = self.rules
        rules.identifier(request_id, "request_id")
        rules.identifier(run_id, "run_id")
        rules.labels(labels)
        rules.ttl(ttl_s, self.limits.max_run_ttl_s, "ttl")
        if run_id in self._runs:
            raise Conflict(f"run_id: run {run_id!r} is already open")
        if len(self._runs) >= self.limits.max_runs:
            raise LimitReached("max_runs", self.limits.max_runs)
        events: list[Event] = []
        ledgers = self._resolve(labels, now, events)
        blockers: list[Blocker] = []
        warnings: list[Blocker] = []
        warn = False
        for ledger in ledgers:
            if ledger.caps:
                if ledger.state and ledger.policy.enforcement is not SHADOW:
                    warn = True
                share = self.shares.of(ledger) if ledger.policy.is_global else None
                collect_blockers(
                    ledger, None, NO_AMOUNTS, blockers, warnings, now, slot=True, share=share
                )
        decision = decide(blockers, warnings, warn)
        for blocker in (*blockers, *warnings):
            events.append(Denied(now, labels, blocker, request_id, run_id))
        briefs = tuple(map(BRIEF, ledgers))
        if decision is Decision.DENY:
            result = OpenRunResult(
                decision, run_id, None, None, briefs, tuple(blockers), tuple(warnings)
            )
        else:
            run = Run(
                run_id,
                dict(labels),
                now,
                ttl_s,
                now,
                tuple(ledgers),
                self._deadlines(ledgers, now),
            )
            for ledger in ledgers:
                ledger.open_slot(now, events)
            self._runs[run_id] = run
            insort(self._run_order, run_id)  # O(runs) moves, at most max_runs: not hot
            self._ended_runs.pop(run_id, None)
            heapq.heappush(self._run_heap, (run.next_due(), run_id))
            events.append(RunOpened(now, run_id, run.labels))
            hard = run.hard_deadline
            result = OpenRunResult(
                decision,
                run_id,
                run.expires_at,
                hard.at if hard else None,
                tuple(map(BRIEF, ledgers)),
                (),
                tuple(warnings),
            )
        if decision is not Decision.DENY or not waits_for_lease(blockers):
            self._remember(
                request_id,
                "open_run",
                now,
                result,
                (tuple(labels.items()), None, (run_id, ttl_s)),
                _pairs_bytes(tuple(labels.items())),
            )
        self._record(
            "open_run", now, labels=labels, run_id=run_id, ttl_s=ttl_s, request_id=request_id
        )
        return result, events

    def heartbeat(self, run_id: str, now: float) -> Outcome[HeartbeatResult]:
        """Keep a run alive for another ttl (never past its hard deadline)."""
        self.rules.identifier(run_id, "run_id")
        run = self._open_run(run_id)
        run.last_seen = max(run.last_seen, now)
        hard = run.hard_deadline
        self._record("heartbeat", now, run_id=run_id)
        return HeartbeatResult(run.expires_at, hard.at if hard else None), []

    def close_run(self, run_id: str, request_id: str, now: float) -> Outcome[CloseRunResult]:
        """End a run: free its slots, return its totals, close ledgers that close with it."""
        prior = self._done.get(request_id)
        if prior is not None:
            return self._replay(prior, "close_run", CloseRunResult, (NO_PAIRS, None, (run_id,)))
        self.rules.identifier(request_id, "request_id")
        self.rules.identifier(run_id, "run_id")
        run = self._open_run(run_id)
        events: list[Event] = []
        result = self._end_run(run, RunEndReason.CLOSED, now, events)
        self._remember(request_id, "close_run", now, result, (NO_PAIRS, None, (run_id,)))
        self._record("close_run", now, run_id=run_id, request_id=request_id)
        return result, events

    # ==================================================================================
    # Time
    # ==================================================================================

    def expire(self, now: float) -> list[Event]:
        """Expire holds and runs that are due, roll windows that ended, age memories.

        Driven by a timer with the real clock; work per call is bounded by
        `limits.sweep_batch` (the rest waits for the next call).
        """
        events: list[Event] = []
        budget = self.limits.sweep_batch
        changed = self._expire_reservations(now, events, budget)
        changed |= self._expire_runs(now, events, budget)
        changed |= self._roll_windows(now, events, budget)
        changed |= self._close_idle(now, events, budget)
        changed |= self._age_memories(now)
        if changed:
            self._record("expire", now)
        return events

    def _expire_reservations(self, now: float, events: list[Event], budget: int) -> bool:
        heap = self._reservation_heap
        changed = False
        while heap and heap[0][0] <= now and budget > 0:
            expires_at, reservation_id = heapq.heappop(heap)
            reservation = self._reservations.get(reservation_id)
            if reservation is None or reservation.expires_at != expires_at:
                continue
            budget -= 1
            changed = True
            self._drop_reservation(reservation, now)
            self._expired_holds[reservation_id] = ExpiredHold(
                reservation.labels, reservation.run_id, reservation.estimate, now
            )
            if len(self._expired_holds) > self.limits.expired_reservation_memory:
                self._expired_holds.popitem(last=False)
            events.append(
                ReservationExpired(now, reservation_id, reservation.labels, reservation.estimate)
            )
        return changed

    def _expire_runs(self, now: float, events: list[Event], budget: int) -> bool:
        heap = self._run_heap
        due_runs: dict[str, float] = {}
        while heap and heap[0][0] <= now:
            _, run_id = heapq.heappop(heap)
            run = self._runs.get(run_id)
            if run is None:
                continue
            due = run.next_due()
            if due > now:  # heartbeats moved it on: one live entry per run
                heapq.heappush(heap, (due, run_id))
                continue
            due_runs[run_id] = due
        # By (due, id), not heap order: a heap's stale keys differ between a live engine
        # and one restored from a snapshot, and replay must end the same runs in the
        # same order.
        ordered = sorted((due, run_id) for run_id, due in due_runs.items())
        for due, run_id in ordered[budget:]:
            heapq.heappush(heap, (due, run_id))
        for _, run_id in ordered[:budget]:
            self._expire_run(self._runs[run_id], now, events)
        return bool(ordered[:budget])

    def _expire_run(self, run: Run, now: float, events: list[Event]) -> None:
        silent_at = run.last_seen + run.ttl_s
        deadline = next((d for d in run.deadlines if not d.reported), None)
        if deadline is None or silent_at < deadline.at:
            self._end_run(run, RunEndReason.HEARTBEAT_TIMEOUT, now, events, silent_at)
            return
        if deadline.enforcement is Enforcement.HARD:
            self._end_run(run, RunEndReason.DURATION_EXCEEDED, now, events, deadline.at)
            return
        deadline.reported = True  # a soft or shadow cap reports once; the run goes on
        events.append(Denied(now, run.labels, duration_blocker(deadline, now), "", run.id))
        heapq.heappush(self._run_heap, (run.next_due(), run.id))

    def _roll_windows(self, now: float, events: list[Event], budget: int) -> bool:
        heap = self._window_heap
        changed = False
        while heap and heap[0] <= now and budget > 0:
            end = heap[0]
            due = self._window_due[end]
            # By serial (popped from the end: oldest first), not scheduling order, which
            # differs between a live engine and a restored one.
            due.sort(key=SERIAL, reverse=True)
            while due and budget > 0:
                ledger = due.pop()
                if ledger.alive and ledger.window_end == end:
                    budget -= 1
                    changed = True
                    self._roll(ledger, now, events)
                    self._schedule_roll(ledger)
            if not due:
                heapq.heappop(heap)
                del self._window_due[end]
        return changed

    def _close_idle(self, now: float, events: list[Event], budget: int) -> bool:
        """Close ledgers of policies with an idle ttl that had no use, hold or run for
        that long. Entries are (due, serial, key), popped in that order (the same in
        a live and a restored engine); a ledger used since is pushed back."""
        heap = self._idle_heap
        changed = False
        while heap and heap[0][0] <= now and budget > 0:
            _, serial, key = heapq.heappop(heap)
            ledger = self._ledgers.get(key)
            if ledger is None or ledger.serial != serial:
                continue  # closed since, or a newer ledger of the same key
            ttl = ledger.policy.idle_ttl_s
            if not ttl:
                continue
            if not ledger.idle:
                heapq.heappush(heap, (now + ttl, serial, key))  # freeing it sets freed_at
                continue
            due = max(ledger.anchor, ledger.last_use or 0.0, ledger.freed_at) + ttl
            if due > now:
                heapq.heappush(heap, (due, serial, key))
                continue
            budget -= 1
            changed = True
            self._remove(ledger, LedgerClosedReason.IDLE, now, events)
        return changed

    def _watch_idle(self, ledger: Ledger) -> None:
        ttl = ledger.policy.idle_ttl_s
        if ttl:
            due = max(ledger.anchor, ledger.last_use or 0.0, ledger.freed_at) + ttl
            heapq.heappush(self._idle_heap, (due, ledger.serial, ledger.key))

    def _age_memories(self, now: float) -> bool:
        changed = False
        done, order = self._done, self._done_order
        oldest = now - self.limits.idempotency_max_age_s
        while order and done[order[0]].at < oldest:
            self._done_bytes -= done.pop(order.popleft()).size
            changed = True
        holds = self._expired_holds
        oldest = now - self.limits.max_reservation_ttl_s
        while holds and next(iter(holds.values())).expired_at < oldest:
            holds.popitem(last=False)
            changed = True
        return changed

    # ==================================================================================
    # Administration
    # ==================================================================================

    def put_policy(
        self, policy: Policy, now: float, apply_to_existing: bool = False, origin: str = FROM_API
    ) -> Outcome[PutPolicyResult]:
        """Add or replace a policy. A changed cap applies to new ledgers only unless
        `apply_to_existing`; a changed match, per or window closes existing ledgers."""
        policy = self._validated(policy)
        if policy.name not in self._policies and len(self._policies) >= self.limits.max_policies:
            raise LimitReached("max_policies", self.limits.max_policies)
        if origin not in (FROM_FILE, FROM_API):
            raise InvalidArgument("origin", f"must be {FROM_FILE!r} or {FROM_API!r}")
        events: list[Event] = []
        result = self._put(policy, now, apply_to_existing, origin, events)
        self._record(
            "put_policy", now, policy=policy, apply_to_existing=apply_to_existing, origin=origin
        )
        return result, events

    def _put(
        self,
        policy: Policy,
        now: float,
        apply_to_existing: bool,
        origin: str,
        events: list[Event],
    ) -> PutPolicyResult:
        old = self._policies.get(policy.name)
        self._install(policy, origin)
        closed = 0
        if old is not None:
            # (A change of scope reshapes too: a global ledger has a share and windows
            # from the epoch, a local one neither.)
            reshaped = (old.match, old.per, old.window, old.missing, old.scope) != (
                policy.match,
                policy.per,
                policy.window,
                policy.missing,
                policy.scope,
            )
            watch = policy.idle_ttl_s and policy.idle_ttl_s != old.idle_ttl_s
            for ledger in self._ledgers_of(policy.name):
                if reshaped:
                    self._remove(ledger, LedgerClosedReason.POLICY_CHANGED, now, events)
                    closed += 1
                    continue
                ledger.policy = policy
                if watch:
                    self._watch_idle(ledger)
                if apply_to_existing and not ledger.caps_overridden:
                    ledger.set_caps(policy.caps, now, events)
                elif old.thresholds != policy.thresholds:
                    ledger.fired = 0
                    ledger.set_caps(ledger.caps, now, [])  # re-arm silently
        events.append(PolicyChanged(now, policy.name, deleted=False))
        return PutPolicyResult(created=old is None, closed_ledgers=closed)

    def delete_policy(self, name: str, now: float) -> Outcome[DeletePolicyResult]:
        """Remove a policy and close its ledgers, each with its final totals."""
        if name not in self._policies:
            raise NotFound("policy", name)
        events: list[Event] = []
        result = self._delete(name, now, events)
        self._record("delete_policy", now, name=name)
        return result, events

    def _delete(self, name: str, now: float, events: list[Event]) -> DeletePolicyResult:
        del self._policies[name]
        del self._origins[name]
        self.ledgers_created.pop(name, None)  # bounded by the policies there are
        self._policy_list = tuple(self._policies.values())
        self._epoch += 1
        closed = []
        for ledger in self._ledgers_of(name):
            closed.append(ledger.status(now))
            self._remove(ledger, LedgerClosedReason.POLICY_DELETED, now, events)
        events.append(PolicyChanged(now, name, deleted=True))
        return DeletePolicyResult(tuple(closed))

    def replace_policies(
        self, policies: Sequence[Policy], now: float
    ) -> Outcome[ReplacePoliciesResult]:
        """Make the config file's policies equal `policies`, all or nothing (a reload).

        Policies put over the admin API stay unless `policies` names them (then the file
        wins and they become the file's). Every policy is validated and the resulting
        count checked before anything changes; unchanged policies keep their ledgers
        counting, changed caps apply to existing ledgers (per-ledger overrides stay).
        """
        wanted = [self._validated(policy) for policy in policies]
        names = [policy.name for policy in wanted]
        if len(set(names)) != len(names):
            raise InvalidArgument("policies", "a name appears twice")
        file_names = {n for n, origin in self._origins.items() if origin == FROM_FILE}
        removed = sorted(file_names - set(names))
        kept_api = {n for n, origin in self._origins.items() if origin == FROM_API} - set(names)
        if len(wanted) + len(kept_api) > self.limits.max_policies:
            raise LimitReached("max_policies", self.limits.max_policies)
        events: list[Event] = []
        for name in removed:
            self._delete(name, now, events)
        added: list[str] = []
        changed: list[str] = []
        for policy in wanted:
            old = self._policies.get(policy.name)
            if old == policy and self._origins[policy.name] == FROM_FILE:
                continue
            (added if old is None else changed).append(policy.name)
            self._put(policy, now, True, FROM_FILE, events)
        if removed or added or changed:
            self._record("replace_policies", now, policies=tuple(wanted))
        result = ReplacePoliciesResult(tuple(sorted(added)), tuple(sorted(changed)), tuple(removed))
        return result, events

    def reset_ledger(self, key: str, request_id: str, now: float) -> Outcome[ResetResult]:
        """Zero a ledger's window in place (holds and open runs stay) and return its totals."""
        prior = self._done.get(request_id)
        if prior is not None:
            return self._replay(prior, "reset_ledger", ResetResult, (NO_PAIRS, None, (key,)))
        self.rules.identifier(request_id, "request_id")
        ledger = self._ledger_by_key(key)
        _refuse_global(ledger, "reset")
        events: list[Event] = []
        if now >= ledger.window_end:
            self._roll(ledger, now, events)
            self._schedule_roll(ledger)
        final = ledger.status(now)
        events.append(
            LedgerClosed(
                now,
                ledger.policy.name,
                ledger.key,
                LedgerClosedReason.RESET,
                final.totals,
                ledger.label_map,
            )
        )
        ledger.clear_window()
        ledger.refresh_levels(now, events)
        result = ResetResult(final)
        self._remember(request_id, "reset_ledger", now, result, (NO_PAIRS, None, (key,)))
        self._record("reset_ledger", now, key=key, request_id=request_id)
        return result, events

    def set_ledger_limits(
        self, key: str, caps: Iterable[tuple[Dimension, int]], now: float
    ) -> Outcome[LedgerStatus]:
        """Override one existing ledger's caps; no caps = the policy's."""
        parsed = parse_key(key)
        if parsed is None:
            raise InvalidArgument("key", "must look like policy{key=value,...}")
        name, values = parsed
        policy = self.policy(name)
        if set(values) != set(policy.per):
            raise InvalidArgument("key", f"policy {name!r} splits by {list(policy.per)}")
        caps = tuple(caps)
        new_caps = self._validated_caps(caps)
        labels = {**{k: v for k, v in policy.match if v != "*"}, **values}
        self.rules.labels(labels, "key")
        events: list[Event] = []
        ledger = self._ledgers.get(key_of(policy, values))
        if ledger is None:
            raise NotFound("ledger", key)
        _refuse_global(ledger, "given its own caps")
        if now >= ledger.window_end:
            self._roll(ledger, now, events)
            self._schedule_roll(ledger)
        ledger.caps_overridden = bool(new_caps)
        ledger.set_caps(new_caps or policy.caps, now, events)
        self._record("set_ledger_limits", now, key=key, caps=caps)
        return ledger.status(now), events

    # ==================================================================================
    # State: what a snapshot stores, and back
    # ==================================================================================

    def export_state(self, *, plain_answers: bool = True) -> dict[str, Any]:
        """The whole state as JSON-compatible data (`state.FORMAT`). With
        `plain_answers=False` the remembered answers stay result objects (immutable),
        for `state.plain_done` to convert later: they are most of the work."""
        return {
            "format": state.FORMAT,
            "id_prefix": self._id_prefix,
            "serial": self._serial,
            "hand": self._live_hand(),
            "reservation_count": self._reservation_count,
            "policies": [policy.to_mapping() for policy in self._policy_list],
            "origins": dict(self._origins),
            "ledgers": [state.ledger_plain(ledger) for ledger in self._chrono if ledger.alive],
            "reservations": [state.reservation_plain(r) for r in self._reservations.values()],
            "expired_holds": [
                [rid, dict(h.labels), h.run_id, state.usage_plain(h.estimate), h.expired_at]
                for rid, h in self._expired_holds.items()
            ],
            "runs": [state.run_plain(run) for run in self._runs.values()],
            "ended_runs": [
                [
                    run_id,
                    ended.reason.value,
                    ended.at,
                    state.deadline_plain(ended.deadline),
                    dict(ended.labels),
                ]
                for run_id, ended in self._ended_runs.items()
            ],
            "done": [
                [
                    request_id,
                    answer.op,
                    answer.at,
                    state.to_plain(answer.result) if plain_answers else answer.result,
                    digest_of(answer.op, answer.remembered) if plain_answers else answer.remembered,
                    answer.size,
                ]
                for request_id, answer in self._done.items()
            ],
            # (Only with global ledgers: the state of a sidecar without them is unchanged.)
            **(
                {"shares": self.shares.to_plain()}
                if self.shares.live or self.shares.closing
                else {}
            ),
        }

    def _live_hand(self) -> int:
        """The eviction hand as a position among live ledgers (what a state without
        dead entries, a snapshot's or a compacted one, has at the same ledger)."""
        chrono = self._chrono
        if not self._dead:
            return self._hand
        hand = self._hand % len(chrono) if chrono else 0
        return sum(1 for ledger in chrono[:hand] if ledger.alive)

    def compact(self, now: float) -> list[Event]:
        """Drop closed ledgers' places from the creation-order list, the eviction hand
        staying on the same ledger. Done before each snapshot (which stores no dead
        entries), as a recorded mutation, so live and replayed engines agree on where
        the next eviction scan starts."""
        if not self._dead:
            return []
        self._hand = self._live_hand()
        self._chrono = [ledger for ledger in self._chrono if ledger.alive]
        self._dead = 0
        self._record("compact", now)
        return []

    @classmethod
    def from_state(
        cls,
        data: Mapping[str, Any],
        *,
        limits: Limits | None = None,
        prices: PriceTable | None = None,
        global_enabled: bool = False,
        max_slice_fraction: float = DEFAULT_MAX_SLICE_FRACTION,
    ) -> Engine:
        """An engine in exactly the exported state, policies and their origins included."""
        if data.get("format") not in state.FORMATS_READ:
            raise InvalidArgument(
                "state.format", f"expected {state.FORMAT!r}, got {data.get('format')!r}"
            )
        policies = [Policy.from_mapping(p, limits, "state.policies") for p in data["policies"]]
        e = cls(
            policies,
            limits=limits,
            prices=prices,
            id_prefix=data["id_prefix"],
            global_enabled=global_enabled,
            max_slice_fraction=max_slice_fraction,
        )
        for name, origin in data.get("origins", {}).items():
            if name in e._origins:
                e._origins[name] = origin
        e._serial = data["serial"]
        e._hand = data["hand"]
        e._reservation_count = data["reservation_count"]
        for item in data["ledgers"]:
            ledger = state.ledger_from_plain(e.policy(item["ident"][0]), item)
            e._label_bytes += ledger.label_bytes  # counted again, not trusted from the state
            e._ledgers[ledger.key] = ledger
            e._chrono.append(ledger)
            e._schedule_roll(ledger)
            e._watch_idle(ledger)
        for item in data["reservations"]:
            estimate = state.usage_from_plain(item["estimate"])
            r = Reservation(
                item["id"],
                item["labels"],
                estimate,
                tuple(item["amounts"]),
                tuple(e._ledger_named(ident) for ident in item["idents"]),
                item["expires_at"],
                item["run_id"],
                item["created_at"],
                -1,  # granted under policies that may have changed since: commit re-resolves
                cls.subject_of(item["labels"], estimate),
            )
            e._reservations[r.id] = r
            e._reservation_heap.append((r.expires_at, r.id))
        heapq.heapify(e._reservation_heap)
        # (Names unlike the loop above's: mypyc types a variable once per function.)
        for rid, held_labels, held_run, held_estimate, expired_at in data["expired_holds"]:
            e._expired_holds[rid] = ExpiredHold(
                held_labels, held_run, state.usage_from_plain(held_estimate), expired_at
            )
        for item in data["runs"]:
            run = state.run_from_plain(e._ledger_named, item)
            e._runs[run.id] = run
            e._run_order.append(run.id)
            e._run_heap.append((run.next_due(), run.id))
        heapq.heapify(e._run_heap)
        e._run_order.sort()
        for run_id, reason, at, deadline, *rest in data["ended_runs"]:
            # States written before ended runs kept labels: {} (seen by no scoped caller).
            e._ended_runs[run_id] = EndedRun(
                RunEndReason(reason),
                at,
                state.deadline_from_plain(deadline) if deadline else None,
                rest[0] if rest else {},
            )
        for entry in data["done"]:
            request_id, op, at, result = entry[:4]
            digest = entry[4] if len(entry) > 4 else None  # format 1 kept no digests
            size = entry[5] if len(entry) > 5 else 0  # nor did states before sizes
            e._remember(request_id, op, at, state.from_plain(result), digest, size=size)
        e.shares.load_plain(data.get("shares", {}))
        # (A state of an earlier form: the journal that follows it is that release's.)
        e.shares.earlier_release = data["format"] != state.FORMAT
        return e

    # ==================================================================================
    # Internals: matching and ledger lifecycle
    # ==================================================================================

    def _validated(self, policy: Policy) -> Policy:
        # One parser for every source: round-trip through the mapping form so a policy
        # built in code obeys exactly the rules a config file does.
        where = f"policy {policy.name!r}"
        if policy.is_global and not self.global_enabled:
            raise InvalidArgument(
                f"{where}.scope",
                "'global' needs a sidecar connected to Redis ([global] redis_url)",
            )
        return Policy.from_mapping(policy.to_mapping(), self.limits, where)

    def _validated_caps(
        self, caps: tuple[tuple[Dimension, int], ...]
    ) -> tuple[tuple[Dimension, int], ...]:
        mapping: dict[str, Any] = {}
        for dimension, limit in caps:
            if not isinstance(dimension, Dimension):
                raise InvalidArgument("caps", f"unknown dimension {dimension!r}")
            name = DIMENSION_NAMES[dimension]
            if name in mapping:
                raise InvalidArgument(f"caps.{name}", "capped twice")
            mapping[name] = limit
        return parse_caps(mapping, self.limits, "caps")

    def _install(self, policy: Policy, origin: str) -> None:
        self._epoch += 1
        self._freed += 1  # its ledgers may have become evictable
        self._policies[policy.name] = policy
        self._origins[policy.name] = origin
        self._policy_list = tuple(self._policies.values())

    @staticmethod
    def subject_of(labels: Labels, usage: Usage) -> Labels:
        """The labels a request is matched with: its own, plus the usage's model/provider."""
        if not usage.model and not usage.provider:
            return labels
        subject = dict(labels)
        if usage.model:
            subject["model"] = usage.model
        if usage.provider:
            subject["provider"] = usage.provider
        return subject

    def _checked_route(
        self, labels: Labels, usage: Usage, field: str
    ) -> tuple[RouteKey, Route | None]:
        """Validate a request's labels (first, whatever else is wrong) and usage; return
        the memo key and the memo entry of a label set seen under the current policies,
        if any: its labels passed validation then, and its ledgers were the right ones."""
        key = (tuple(labels.items()), usage.model, usage.provider)
        route = self._routes.get(key)
        if route is not None and route[0] != self._epoch:
            route = None
        if route is None:
            self.rules.labels(labels)
            _agrees_with_usage(labels, usage, field)
        else:
            key = route[3]  # the memo's own: what requests remember is shared
        self.rules.usage(usage, field)
        return key, route

    def _route(
        self,
        key: RouteKey,
        route: Route | None,
        labels: Labels,
        usage: Usage,
        now: float,
        events: list[Event],
    ) -> tuple[Labels, tuple[Ledger, ...], int]:
        """The subject, ledgers and label text bytes of a request whose labels are
        valid (checked, or known from `route`): the memo's while every ledger in it is
        alive, else resolved afresh (see `_resolve`) and remembered.

        The subject returned may be shared with earlier events: it is never mutated.
        """
        if route is not None:
            _, subject, known, _, text = route
            for ledger in known:
                if not ledger.alive:
                    break  # closed since (evicted, run closed): resolve afresh
            else:
                for ledger in known:
                    if now >= ledger.window_end:
                        self._roll(ledger, now, events)
                        self._schedule_roll(ledger)
                return subject, known, text
        subject = self.subject_of(labels, usage)
        if subject is labels:
            subject = dict(labels)  # the caller's dict may change after the call
        ledgers = tuple(self._resolve(subject, now, events))
        text = _pairs_bytes(key[0]) + text_bytes(key[1]) + text_bytes(key[2])
        self._memoize((self._epoch, subject, ledgers, key, text))
        return subject, ledgers, text

    def _memoize(self, route: Route) -> None:
        """Keep `route`, dropping the oldest entries beyond route_memo_entries or
        route_memo_label_bytes (a label set larger than the whole budget is not kept)."""
        key, text = route[3], route[4]
        routes = self._routes
        old = routes.pop(key, None)
        if old is not None:
            self._route_bytes -= old[4]
        limit = self.limits.route_memo_label_bytes
        if text > limit:
            return
        entries = self.limits.route_memo_entries
        while routes and (len(routes) >= entries or self._route_bytes + text > limit):
            _, dropped = routes.popitem(last=False)
            self._route_bytes -= dropped[4]
        routes[key] = route
        self._route_bytes += text

    def _matching(self, labels: Labels) -> list[Policy]:
        matched = []
        for policy in self._policy_list:
            for key, wanted in policy.requirements:
                value = labels.get(key)
                if value is None or (wanted is not None and value != wanted):
                    break
            else:
                matched.append(policy)
        return matched

    def _ledger_named(self, ident: Sequence[str]) -> Ledger:
        """The ledger a state names by its ident (KeyError when there is none)."""
        policy = self._policies.get(ident[0])
        if policy is None:
            raise KeyError(tuple(ident))
        return self._ledgers[format_key(tuple(ident), policy.per)]

    def _resolve(self, labels: Labels, now: float, events: list[Event]) -> list[Ledger]:
        """The ledgers of every matching policy (in policy order), created and rolled.

        Raises `LimitReached` before changing anything when new ledgers do not fit.
        Matching is inlined: this runs on every hot-path call.
        """
        ledgers = self._ledgers
        found: list[Ledger] = []
        missing: list[tuple[int, Policy, str]] | None = None
        stale: list[Ledger] | None = None
        for policy in self._policy_list:
            for key, wanted in policy.requirements:
                value = labels.get(key)
                if value is None or (wanted is not None and value != wanted):
                    break
            else:
                ledger_key = key_of(policy, labels)
                ledger = ledgers.get(ledger_key)
                if ledger is None:
                    if missing is None:
                        missing = []
                    missing.append((len(found) + len(missing), policy, ledger_key))
                else:
                    if now >= ledger.window_end:
                        if stale is None:
                            stale = []
                        stale.append(ledger)
                    found.append(ledger)
        if missing is not None:
            created = self._create([(p, i) for _, p, i in missing], now, events, found)
            for (position, _, _), ledger in zip(missing, created, strict=True):
                found.insert(position, ledger)
        if stale is not None:  # after creation, which may raise: a refusal changes nothing
            for ledger in stale:
                self._roll(ledger, now, events)
                self._schedule_roll(ledger)
        return found

    def _create(
        self,
        wanted: list[tuple[Policy, str]],
        now: float,
        events: list[Event],
        protected: list[Ledger] | None = None,
    ) -> list[Ledger]:
        sizes = [key_text_bytes(key, policy) for policy, key in wanted]
        self._make_room(len(wanted), sum(sizes), now, events, protected or [])
        created = []
        counts = self.ledgers_created
        for (policy, key), size in zip(wanted, sizes, strict=True):
            counts[policy.name] = counts.get(policy.name, 0) + 1
            self._serial += 1
            ledger = Ledger(key, policy, now, self._serial)
            self._label_bytes += size
            self._ledgers[key] = ledger
            self._chrono.append(ledger)
            self._schedule_roll(ledger)
            self._watch_idle(ledger)
            if policy.is_global:
                self._open_share(ledger, now, events)
            created.append(ledger)
        self._freed += 1  # new ledgers are idle
        return created

    def _make_room(
        self,
        needed: int,
        needed_bytes: int,
        now: float,
        events: list[Event],
        protected: list[Ledger],
    ) -> None:
        """Evict idle ledgers of evictable policies (least recently used among a bounded
        scan from the hand) until `needed` more ledgers holding `needed_bytes` of label
        text fit under max_ledgers and max_label_bytes, or raise before evicting anything.

        When the bounded scan finds too few, the rest of the table is scanned too (a
        window of busy or unevictable ledgers must not refuse every new ledger for good);
        a full scan is not repeated for as much or more until some ledger may have
        become evictable. The hand moves only when room was made: a refusal changes no
        state, so a replayed journal evicts the same ledgers."""
        limits = self.limits
        shortfall = len(self._ledgers) + needed - limits.max_ledgers
        bytes_over = self._label_bytes + needed_bytes - limits.max_label_bytes
        if shortfall <= 0 and bytes_over <= 0:
            return
        if needed_bytes > limits.max_label_bytes:
            raise self._no_room("max_label_bytes", "the new ledgers' labels alone exceed it")
        count_over = shortfall
        shortfall = max(shortfall, 1)  # evicting for bytes evicts one ledger at least
        full_at, full_count, full_bytes = self._full_scan
        if full_at == self._freed and (shortfall > full_count or bytes_over > full_bytes):
            raise self._no_room("max_ledgers" if count_over > full_count else "max_label_bytes")
        hand, candidates, scanned = self._candidates(shortfall, bytes_over, protected)
        found_bytes = sum(ledger.label_bytes for ledger in candidates)
        if len(candidates) < shortfall or found_bytes < bytes_over:
            if scanned == len(self._chrono):
                self._full_scan = (self._freed, len(candidates), found_bytes)
            raise self._no_room(
                "max_ledgers" if count_over > len(candidates) else "max_label_bytes"
            )
        self._hand = hand + scanned
        candidates.sort(key=lambda ledger: ledger.last_use or ledger.anchor)
        for ledger in candidates:
            if shortfall <= 0 and bytes_over <= 0:
                break
            shortfall -= 1
            bytes_over -= ledger.label_bytes
            self._remove(ledger, LedgerClosedReason.EVICTED, now, events)

    def _candidates(
        self, shortfall: int, bytes_over: int, protected: list[Ledger]
    ) -> tuple[int, list[Ledger], int]:
        """Evictable ledgers from the hand on: `eviction_scan` per ledger needed among a
        window of 16 times that, further only until enough count and bytes are found.
        Returns where the scan started, them and how many places were looked at."""
        chrono = self._chrono
        scan = self.limits.eviction_scan
        wanted = shortfall * scan
        window = min(len(chrono), scan * shortfall * 16)
        candidates: list[Ledger] = []
        found_bytes = 0
        hand = self._hand % len(chrono) if chrono else 0
        scanned = 0
        for step in range(len(chrono)):
            enough = len(candidates) >= shortfall and found_bytes >= bytes_over
            if step >= window and enough:
                break
            ledger = chrono[(hand + step) % len(chrono)]
            scanned = step + 1
            if ledger.alive and ledger.policy.evictable and ledger.idle and ledger not in protected:
                candidates.append(ledger)
                found_bytes += ledger.label_bytes
                if len(candidates) >= wanted and found_bytes >= bytes_over:
                    break
        return hand, candidates, scanned

    def _no_room(self, bound: str, why: str = "") -> LimitReached:
        limit = self.limits.max_ledgers if bound == "max_ledgers" else self.limits.max_label_bytes
        return LimitReached(
            bound, limit, why or "no idle ledger of an evictable policy to make room"
        )

    def _remove(
        self, ledger: Ledger, reason: LedgerClosedReason, now: float, events: list[Event]
    ) -> None:
        events.append(
            LedgerClosed(
                now, ledger.policy.name, ledger.key, reason, ledger.totals(), ledger.label_map
            )
        )
        if ledger.policy.is_global:
            self.shares.closed(ledger)
        del self._ledgers[ledger.key]
        self._label_bytes -= ledger.label_bytes
        ledger.alive = False
        self._freed += 1
        self._dead += 1
        if self._dead > 1024 and self._dead * 2 > len(self._chrono):
            self._chrono = [x for x in self._chrono if x.alive]
            self._dead = 0
            self._hand = 0

    def _schedule_roll(self, ledger: Ledger) -> None:
        end = ledger.window_end
        if ledger.buckets is not None or math.isinf(end):
            return
        due = self._window_due.get(end)
        if due is None:
            self._window_due[end] = due = []
            heapq.heappush(self._window_heap, end)
        due.append(ledger)

    def _ledgers_of(self, policy_name: str) -> list[Ledger]:
        return [x for x in self._ledgers.values() if x.policy.name == policy_name]

    def _ledger_by_key(self, key: str) -> Ledger:
        parsed = parse_key(key)
        if parsed is None:
            raise InvalidArgument("key", "must look like policy{key=value,...}")
        name, values = parsed
        policy = self._policies.get(name)
        ledger = None
        if policy is not None and set(values) == set(policy.per):
            ledger = self._ledgers.get(key_of(policy, values))
        if ledger is None:
            raise NotFound("ledger", key)
        return ledger

    # ==================================================================================
    # Internals: decisions, holds, runs, memory
    # ==================================================================================

    def _let_go(self, ledgers: Sequence[Ledger], amounts: tuple[int, ...]) -> None:
        release(ledgers, amounts)
        self._freed += 1  # they may be evictable now

    def _drop_reservation(self, reservation: Reservation, now: float) -> None:
        del self._reservations[reservation.id]
        # A ledger closed since (policy changed or deleted) is dead: nothing to release.
        alive = [x for x in reservation.ledgers if x.alive]
        self._let_go(alive, reservation.amounts)
        for ledger in alive:
            ledger.freed_at = now

    def _run_gate(self, run_id: str, now: float) -> Blocker | None:
        """For usage estimated within a run: the run_duration cap it is past, if any."""
        if not run_id:
            return None
        self.rules.identifier(run_id, "run_id")
        run = self._runs.get(run_id)
        if run is None:
            ended = self._ended_runs.get(run_id)
            if ended is None or ended.reason is not RunEndReason.DURATION_EXCEEDED:
                self._open_run(run_id)  # raises the precise NotFound
            assert ended is not None and ended.deadline is not None
            return duration_blocker(ended.deadline, ended.at)
        for deadline in run.deadlines:
            if deadline.at <= now:
                return duration_blocker(deadline, now)
        return None

    def _open_run(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            ended = self._ended_runs.get(run_id)
            hint = f"ended ({ended.reason.value}) at {ended.at:.3f}" if ended else ""
            raise NotFound("run", run_id, hint)
        return run

    def _deadlines(self, ledgers: list[Ledger], now: float) -> list[Deadline]:
        deadlines = [
            Deadline(now + limit / 1000, ledger.policy.name, ledger.key, limit, ledger.enforcement)
            for ledger in ledgers
            for dimension, limit in ledger.caps
            if dimension == RUN_DURATION
        ]
        return sorted(deadlines, key=lambda d: d.at)

    def _attribute(self, run_id: str, delta: tuple[int, ...], now: float) -> None:
        run = self._runs.get(run_id) if run_id else None
        if run is None:
            return  # usage is recorded in the ledgers all the same
        totals = run.totals
        for i in range(VECTOR_SIZE):
            totals[i] += delta[i]
        if run.first_use is None:
            run.first_use = now
        run.last_use = now

    def _end_run(
        self,
        run: Run,
        reason: RunEndReason,
        now: float,
        events: list[Event],
        ended_at: float | None = None,
    ) -> CloseRunResult:
        """End a run; its duration runs to `ended_at` (when it expired) or to `now`."""
        duration_s = max(0.0, min(now, ended_at if ended_at is not None else now) - run.opened_at)
        duration_ms = int(duration_s * 1000)
        for ledger in run.ledgers:
            if ledger.alive:
                if now >= ledger.window_end:
                    self._roll(ledger, now, events)
                    self._schedule_roll(ledger)
                ledger.close_slot(duration_ms, now, events)
                self._freed += 1
        run.totals[RUN_DURATION] += duration_ms
        del self._runs[run.id]
        order = self._run_order
        del order[bisect_left(order, run.id)]
        self._ended_runs[run.id] = EndedRun(
            reason,
            now,
            run.hard_deadline if reason is RunEndReason.DURATION_EXCEEDED else None,
            run.labels,
        )
        if len(self._ended_runs) > self.limits.ended_run_memory:
            self._ended_runs.popitem(last=False)
        closed = []
        for ledger in run.ledgers:
            if ledger.alive and ledger.policy.close_with_run and ledger.idle:
                closed.append(ledger.status(now))
                self._remove(ledger, LedgerClosedReason.RUN_CLOSED, now, events)
        totals = Totals.of(run.totals, run.first_use, run.last_use)
        events.append(RunEnded(now, run.id, run.labels, reason, totals, duration_s))
        return CloseRunResult(run.id, totals, duration_s, tuple(closed))

    def _remember(
        self,
        request_id: str,
        op: str,
        now: float,
        result: Result,
        remembered: Remembrance,
        text: int = 0,
        size: int = 0,
    ) -> None:
        """Keep the answer to a new request_id (never one already remembered) with what
        the request was (see `budgetd.core.digest`); `text` is the UTF-8 bytes of its
        labels. It counts `size`, else ANSWER_BYTES + its id + `text`: a pure function of
        the request, so a replayed journal forgets the same ids as the live engine."""
        if not size:
            size = ANSWER_BYTES + len(request_id) + text
        done = self._done
        done[request_id] = Remembered(op, now, result, remembered, size)
        order = self._done_order
        order.append(request_id)
        total = self._done_bytes + size
        limits = self.limits
        if len(order) > limits.idempotency_max_entries:  # the usual case once full
            total -= done.pop(order.popleft()).size
        self._done_bytes = total
        if total > limits.idempotency_max_bytes:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Forget the oldest ids until both bounds hold again (the newest always stays:
        a retry of the call just answered must be recognised)."""
        done, order, limits = self._done, self._done_order, self.limits
        while len(order) > 1 and (
            len(order) > limits.idempotency_max_entries
            or self._done_bytes > limits.idempotency_max_bytes
        ):
            self._done_bytes -= done.pop(order.popleft()).size

    def _replay(
        self, prior: Remembered, op: str, kind: type[R], request: Fingerprint
    ) -> Outcome[R]:
        prior_op, result, remembered = prior.op, prior.result, prior.remembered
        if prior_op != op or not isinstance(result, kind):
            raise Conflict(f"request_id: already used by a {prior_op} request")
        if differs(op, remembered, request):
            raise Conflict(
                f"request_id: already used for a different {op} request (other labels,"
                " usage or arguments); a retry must repeat the call exactly"
            )
        return replace(result, replayed=True), []

    # ==================================================================================
    # Global ledgers: what the leaser learns from Redis (budgetd.core.shares)
    # ==================================================================================

    def open_global(self, labels: Labels, now: float) -> Outcome[int]:
        """Open the ledgers of global policies `labels` match that are not open yet,
        counting nothing: a Check found one unleased, and the leaser leases only for
        open ledgers. Returns how many it opened."""
        self.rules.labels(labels)
        wanted = [
            policy
            for policy in self._policy_list
            if policy.is_global
            and policy.matches(labels)
            and key_of(policy, labels) not in self._ledgers
        ]
        if not wanted:
            return 0, []
        events: list[Event] = []
        self._create([(policy, key_of(policy, labels)) for policy in wanted], now, events)
        self._record("open_global", now, labels=labels)
        return len(wanted), events

    def _open_share(self, ledger: Ledger, now: float, events: list[Event]) -> None:
        """A new global ledger's share; one that takes back its window's closing share
        continues from the closed ledger's counters (see shares.Shares.opened)."""
        counts = self.shares.opened(ledger, now)
        if counts is not None and any(counts):
            # (record_usage skips what is never summed: open runs, run time, wall clock.)
            record_usage((ledger,), tuple(counts), now, events)

    def global_ledger(self, key: str) -> Ledger | None:
        """A live ledger of a global policy, for the leaser to read (never to change:
        what it learns goes through `share_synced` and the other share mutations)."""
        ledger = self._ledgers.get(key)
        return ledger if ledger is not None and ledger.policy.is_global else None

    def _roll(self, ledger: Ledger, now: float, events: list[Event]) -> None:
        """`ledger.roll`, and for a global ledger its share's window with it."""
        if not ledger.policy.is_global:
            ledger.roll(now, events)
            return
        counts, start, end = ledger.counts(), ledger.window_start, ledger.window_end
        ledger.roll(now, events)
        if ledger.window_start != start:
            self.shares.rolled(ledger, counts, start, end)

    def share_synced(
        self,
        key: str,
        window_start: float,
        allowance: Sequence[Sequence[int]],
        global_used: Sequence[int],
        settled: Sequence[int],
        seq: int,
        sidecars: int,
        lease_until: float,
        now: float,
    ) -> Outcome[bool]:
        """Redis's answer for one share: this sidecar's allowance (granted less given
        back, per capped dimension), the window's totals and this sidecar's settled
        usage (per slot), the last settle applied, the live sidecars, the lease's end."""
        events: list[Event] = []
        ledger = self._ledgers.get(key)
        if ledger is not None and now >= ledger.window_end:
            self._roll(ledger, now, events)
            self._schedule_roll(ledger)
        found = self.shares.synced(
            key,
            window_start,
            allowance,
            global_used,
            settled,
            seq,
            sidecars,
            lease_until,
            now,
            events,
        )
        if found:
            self._record(
                "share_synced",
                now,
                key=key,
                window_start=window_start,
                allowance=[list(pair) for pair in allowance],
                global_used=list(global_used),
                settled=list(settled),
                seq=seq,
                sidecars=sidecars,
                lease_until=lease_until,
            )
        return found, events

    def share_settling(
        self,
        key: str,
        window_start: float,
        seq: int,
        used: Sequence[int],
        give_back: Sequence[Sequence[int]],
        now: float,
    ) -> Outcome[bool]:
        """A settle about to be sent to Redis (journaled first: see shares.Settling)."""
        found = self.shares.settling(key, window_start, seq, used, give_back)
        if found:
            self._record(
                "share_settling",
                now,
                key=key,
                window_start=window_start,
                seq=seq,
                used=list(used),
                give_back=[list(pair) for pair in give_back],
            )
        return found, []

    def shares_unreachable(self, now: float) -> Outcome[bool]:
        """Redis could not be reached: every share is judged by its on_unavailable until
        Redis answers for it again, and so is every share opened meanwhile."""
        changed = self.shares.unreachable()
        if changed:
            self._record("shares_unreachable", now)
        return changed, []

    def share_unreachable(self, key: str, window_start: float, now: float) -> Outcome[bool]:
        """One share out of Redis's reach: replayed from journals written before
        reachability was a round's (`shares_unreachable`); never recorded now."""
        return self.shares.unreachable_share(key, window_start), []

    def replayed(self) -> None:
        """The journal that followed the loaded state is replayed: what comes from now
        on follows this release's rules (see Shares.earlier_release)."""
        self.shares.earlier_release = False

    def share_settled_up(self, key: str, window_start: float, now: float) -> Outcome[bool]:
        """A closing share owes Redis nothing more (refused while it still owes)."""
        found = self.shares.settled_up(key, window_start)
        if found:
            self._record("share_settled_up", now, key=key, window_start=window_start)
        return found, []

    def apply(self, mutation: Mutation) -> Outcome[Any]:
        """Carry out one mutation: what every change of state goes through, live or
        replayed from the journal. Returns the operation's result (None for `expire`)
        and its events; reports the mutation to `recorder` when state changed."""
        if mutation.op not in MUTATING_OPS:
            raise InvalidArgument("op", f"unknown mutation {mutation.op!r}")
        outcome = getattr(self, mutation.op)(**mutation.args, now=mutation.now)
        if mutation.op in ("expire", "compact"):
            return None, outcome
        return outcome  # type: ignore[no-any-return]

    def _record(self, op: str, now: float, **args: Any) -> None:
        if self.recorder is not None:
            self.recorder(Mutation(op, now, args))


def waits_for_lease(blockers: Sequence[Blocker]) -> bool:
    """A denial only a lease stands in the way of (the cap has room): not remembered
    under its request_id, so the same request tried again once the leaser has leased
    more is judged afresh."""
    return bool(blockers) and all(blocker.lease for blocker in blockers)


def _refuse_global(ledger: Ledger, what: str) -> None:
    if ledger.policy.is_global:
        raise InvalidArgument(
            "key",
            f"{ledger.key} is a global ledger: it cannot be {what} on one sidecar "
            "(its totals and its cap are shared through Redis)",
        )


def uncommittable(reservation_id: str) -> NotFound:
    """What Commit answers for an id that holds nothing to commit (the service answers
    the same, word for word, for a reservation outside the caller's scope)."""
    return NotFound(
        "reservation",
        reservation_id,
        "never granted, already committed or released, or expired too long ago;"
        " record the usage with Consume",
    )


def _agrees_with_usage(labels: Labels, usage: Usage, field: str) -> None:
    """An explicit `model` or `provider` label must name the usage's own."""
    for name, value in (("model", usage.model), ("provider", usage.provider)):
        given = labels.get(name)
        if given is not None and value and given != value:
            raise InvalidArgument(
                f"labels.{name}", f"{given!r} contradicts {field}.{name} {value!r}"
            )


def _pairs_bytes(pairs: tuple[tuple[str, str], ...]) -> int:
    """UTF-8 bytes of a label set's keys and values."""
    size = 0
    for key, value in pairs:
        size += text_bytes(key) + text_bytes(value)
    return size


def _selected(ledger: Ledger, selector: Mapping[str, str]) -> bool:
    """Whether the ledger's labels (`Ledger.labels`) hold every pair of `selector`:
    tested on its policy's match and its per values, without building them."""
    policy = ledger.policy
    values: dict[str, str] | None = None
    for key, value in selector.items():
        if key in policy.per:
            if values is None:
                values = dict(zip(policy.per, key_values(ledger.key, policy), strict=True))
            if values[key] != value:
                return False
        elif value == "*" or (key, value) not in policy.match:
            return False
    return True
