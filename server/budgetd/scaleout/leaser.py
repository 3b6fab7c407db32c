"""The leaser: keeps every global ledger's share in step with Redis.

One task on the daemon's loop. Every sync interval (or at once when a call found its
lease empty: `wait_for_lease`) it looks at each share the engine holds
(budgetd.core.shares) and, when there is something to do, settles the usage Redis does
not have yet (journaled first through the one mutation path, so a restart resends the
same settle, which Redis applies once), gives back what demand no longer needs, leases
more when the slice runs low (`planning.plan`), and tells the engine what Redis
answered (`share_synced`). A share with nothing to do is renewed once a third of the
lease's time has passed. The hot path never waits on any of it.

While Redis cannot be reached every share is marked unreachable (its policy's
on_unavailable decides what it grants meanwhile) and Redis is tried again with a
growing back-off; usage recorded meanwhile stays unsettled and is settled once Redis
is back, exactly once.

Redis applies a settle once per (sidecar, window, sequence number), so a share numbers
its settles above the last one Redis applied for this sidecar on the window: before a
share's first settle since this start, the leaser asks Redis for it (a lease or a
read: every reply carries it). A share that starts again from nothing (a new one on a
window an earlier one settled into, a wiped state directory, a snapshot older than what
Redis has) thus never has a settle dropped as a repeat.

Redis keys a ledger's window by its index: its start in unix seconds, the same
instant on every sidecar (0 for a lifetime window), so calendar windows roll at once
everywhere and nothing resets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from budgetd.core.dimensions import VECTOR_SIZE
from budgetd.core.ledger import Ledger
from budgetd.core.policy import Enforcement
from budgetd.core.shares import SHARED_SLOTS, Closing, Share, unsettled
from budgetd.logs import fields
from budgetd.runtime import Runtime
from budgetd.scaleout import planning
from budgetd.scaleout.redis_store import GlobalKey, RedisStore, StoreUnavailable
from budgetd.scaleout.redis_store import Share as Reply
from budgetd.scaleout.settings import GlobalSettings

log = logging.getLogger("budgetd.global")

GAUGE = planning.GAUGE
# Back-off between tries while Redis is out of reach.
FIRST_RETRY_S = 0.1
LAST_RETRY_S = 5.0
# The lease is taken to end this much (a fraction of its ttl) before Redis's deadline:
# the round trip, and the sidecar's clock against Redis's.
LEASE_MARGIN = 0.1
# Shares synced at once (each its own round trips; a sidecar may hold thousands).
MAX_CONCURRENT_SYNCS = 32
COUNTER_DIMS = tuple(SHARED_SLOTS)  # what every settle carries: the window's totals


@dataclass(slots=True)
class _Demand:
    """A share's own usage per leased dimension at the last look, its growth since (what
    the slice aims for), the last aim, when Redis last answered for it, and whether it
    has since this leaser started (until then its seq may lag Redis's)."""

    last: dict[int, int] = field(default_factory=dict)
    recent: dict[int, int] = field(default_factory=dict)
    aimed: dict[int, int] = field(default_factory=dict)  # the last aim, per dimension
    exchanged_at: float = -math.inf
    contacted: bool = False


@dataclass(frozen=True, slots=True)
class _Target:
    """One share to sync: its ledger (None: closing) and what the plan is made of."""

    key: str
    share: Share
    counts: Sequence[int]
    reserved: Sequence[int]
    caps: list[tuple[int, int]]  # leased dimensions (hard caps) and their limits
    window: GlobalKey
    closing: bool


class Leaser:
    def __init__(
        self,
        runtime: Runtime,
        store: RedisStore,
        settings: GlobalSettings,
        sidecar: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.settings = settings
        self.sidecar = sidecar
        self.clock = clock
        self.ttl_ms = int(settings.lease_ttl_s * 1000)
        self.reachable = False  # until Redis answers a first round
        self._told = False  # whether on_reachability has heard of the state yet
        self.calls = 0  # Redis calls made (the bench: calls per 1,000 decisions)
        self.rounds = 0  # rounds finished
        self._started = 0  # rounds begun
        self.on_reachability: Callable[[bool], None] | None = None  # health
        self._retry_s = FIRST_RETRY_S
        self._demand: dict[tuple[str, float], _Demand] = {}  # by share: (key, window)
        self._wake = asyncio.Event()
        self._round_done = asyncio.Event()
        self._last_error = ""
        self._dropped = 0  # closing shares the engine dropped, as last logged
        self._stopping = False

    # --- the task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Sync every share each interval, until `stop` (the round in progress ends)."""
        while not self._stopping:
            self._wake.clear()
            self._started += 1
            try:
                await self.sync_all()
            except StoreUnavailable:
                pass  # (sync_all has said so and marked the shares)
            except Exception as error:  # e.g. the journal refusing: retried next round
                if str(error) != self._last_error:
                    log.error("global sync failed", extra=fields(error=error))
                    self._last_error = str(error)
            self._finished()
            wait = self.settings.sync_interval_s if self.reachable else self._retry_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def stop(self) -> None:
        """`run` ends once the round in progress has (its Redis calls answered: a call
        cut off mid-way may still be carried out by Redis after the final give-back,
        leasing again what was given back)."""
        self._stopping = True
        self._wake.set()

    async def wait_for_lease(self, timeout_s: float) -> bool:
        """Wake the task and wait (at most `timeout_s`) for a round that began after
        this call: a call its lease could not cover tries once more after it. False:
        neither did such a round finish nor did Redis's reachability change (no wait,
        Redis known out of reach, the time ran out), so trying again would find what
        the call found."""
        target = self._started + 1  # one that begins from now (one in progress looked)
        shares = self.runtime.engine.shares
        reachable = shares.reachable
        self._wake.set()  # (even with no wait: the next call finds the lease sooner)
        if timeout_s <= 0:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # (Before a first round finished, Redis is not known out of reach: wait for it.)
        while self.rounds < target and (self.reachable or self.rounds == 0):
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._round_done.wait(), left)
            except TimeoutError:
                break
        # (A round that found Redis gone marks shares out of reach: under allow_local a
        # call is then judged by the cap alone.)
        return self.rounds >= target or shares.reachable != reachable

    def _finished(self) -> None:
        self.rounds += 1
        done, self._round_done = self._round_done, asyncio.Event()
        done.set()

    # --- one round --------------------------------------------------------------------

    async def sync_all(self, *, final: bool = False) -> None:
        """One round over every share; `final` (shutdown): settle all, give all back.
        StoreUnavailable: Redis did not answer (every share is marked unreachable)."""
        dropped = self.runtime.engine.shares.dropped
        if dropped > self._dropped:
            log.error(
                "ended windows dropped before they settled: Redis was out of reach too long",
                extra=fields(windows=dropped - self._dropped, since_start=dropped),
            )
            self._dropped = dropped
        targets = self._targets(final)
        self._forget_gone()
        failed: BaseException | None = None
        for start in range(0, len(targets), MAX_CONCURRENT_SYNCS):
            chunk = targets[start : start + MAX_CONCURRENT_SYNCS]
            # Every sync of the chunk ends before the round goes on or gives up.
            results = await asyncio.gather(
                *(self._sync(t, final) for t in chunk), return_exceptions=True
            )
            for result in results:
                if isinstance(result, StoreUnavailable):
                    await self._lost(result.reason)
                    raise result
            for target, result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):  # this share only: the others go on
                    self._failed(target, result)
                    failed = result
        self._found()
        closing = self.runtime.engine.shares.closing
        for target in targets:
            # Judged on the closing share as it stands now, not as the round found it: a
            # ledger may have taken it back, used it and closed again meanwhile (the
            # engine refuses too while usage is owed).
            ended = closing.get((target.key, target.share.window_start))
            if ended is not None and ended.share is target.share and _settled_up(ended):
                args = {"key": target.key, "window_start": target.share.window_start}
                await self.runtime.apply("share_settled_up", args)
        if failed is not None and final:
            raise failed  # (a drain says the leases were not all given back)

    def _failed(self, target: _Target, error: BaseException) -> None:
        """One share's sync failed for a reason of its own (the journal refusing, a
        bug): said once per distinct reason, tried again next round."""
        if str(error) != self._last_error:
            log.error(
                "global sync of a ledger failed",
                extra=fields(key=target.key, error=error or type(error).__name__),
            )
            self._last_error = str(error)

    def _forget_gone(self) -> None:
        """Drop what the leaser keeps of shares the engine no longer has."""
        shares = self.runtime.engine.shares
        kept = {(key, share.window_start) for key, share in shares.live.items()}
        kept.update(shares.closing)
        if len(kept) < len(self._demand):
            self._demand = {k: v for k, v in self._demand.items() if k in kept}

    def _targets(self, final: bool) -> list[_Target]:
        engine = self.runtime.engine
        targets: list[_Target] = []
        for (key, start), closing in list(engine.shares.closing.items()):
            caps = [(d, 0) for d in closing.share.allowance]
            window = _window_key(key, start, closing.window_end)
            targets.append(_Target(key, closing.share, closing.counts, (), caps, window, True))
        for key, share in list(engine.shares.live.items()):
            ledger = engine.global_ledger(key)
            if ledger is None or share.window_start != ledger.window_start:
                continue  # rolled or closed: its share moves to closing at its next use
            caps = _leased_caps(ledger)
            window = _window_key(key, share.window_start, ledger.window_end)
            counts, reserved = ledger.counts(), list(ledger.reserved)
            targets.append(_Target(key, share, counts, reserved, caps, window, final))
        return targets

    async def _sync(self, target: _Target, final: bool) -> None:
        share, now = target.share, self.clock()
        demand = self._demand.setdefault((target.key, share.window_start), _Demand())
        _observe(demand, target, self.settings.min_slice, self.settings.max_slice)
        resend = share.settling is not None
        if share.settling is not None:  # sent before and not confirmed: again, as is
            sending = share.settling
            plan = planning.Plan(sending.seq, sending.used, sending.give_back, {})
        else:
            plan = self._plan(target, demand)
            renew_due = now - demand.exchanged_at >= self.settings.lease_ttl_s / 3
            if not plan.settles and not plan.wants and not (renew_due and not target.closing):
                return
            if plan.settles and not demand.contacted:
                # Redis's seq for this sidecar first (with the lease the plan wants), so
                # the settle is numbered above it; then the plan again, on what came back.
                first = planning.Plan(0, [0] * VECTOR_SIZE, {}, plan.wants)
                await self._exchange(target, first, now, False)
                demand.exchanged_at, demand.contacted = now, True
                fresh = self._refreshed(target, final)
                if fresh is None:
                    return
                target, plan = fresh, self._plan(fresh, demand)
                if not plan.settles and not plan.wants:
                    return
            if plan.settles:
                await self._journal_settling(target, plan)
        await self._exchange(target, plan, now, resend)
        demand.exchanged_at, demand.contacted = now, True

    def _plan(self, target: _Target, demand: _Demand) -> planning.Plan:
        return planning.plan(
            target.share,
            target.counts,
            target.reserved,
            target.caps,
            demand.recent,
            self.settings.min_slice,
            self.settings.max_slice,
            target.closing,
        )

    def _refreshed(self, target: _Target, final: bool) -> _Target | None:
        """`target` as its share stands now: its counters (Redis's answer may have folded
        the others' usage into them), and whether it is live or closing (a ledger may
        have closed, or taken a closing share back, meanwhile). None: its share is gone
        or moved on."""
        engine, start = self.runtime.engine, target.share.window_start
        closing = engine.shares.closing.get((target.key, start))
        if closing is not None:
            if closing.share is not target.share:
                return None
            caps = [(d, 0) for d in closing.share.allowance]
            window = _window_key(target.key, start, closing.window_end)
            return _Target(target.key, closing.share, closing.counts, (), caps, window, True)
        ledger = engine.global_ledger(target.key)
        if ledger is None or engine.shares.of(ledger) is not target.share:
            return None
        counts, reserved = ledger.counts(), list(ledger.reserved)
        window = _window_key(target.key, start, ledger.window_end)
        caps = _leased_caps(ledger)
        return _Target(target.key, target.share, counts, reserved, caps, window, final)

    async def _journal_settling(self, target: _Target, plan: planning.Plan) -> None:
        await self.runtime.apply(
            "share_settling",
            {
                "key": target.key,
                "window_start": target.share.window_start,
                "seq": plan.seq,
                "used": plan.used,
                "give_back": [[d, a] for d, a in plan.give_back.items()],
            },
        )

    async def _exchange(
        self, target: _Target, plan: planning.Plan, sent_at: float, resend: bool
    ) -> None:
        """The Redis calls of one sync, then what they answered into the engine."""
        share, dims = target.share, _dims(target)
        settled, seq = list(share.settled), share.seq
        reply: Reply | None = None
        if plan.settles:
            self.calls += 1
            reply = await self.store.settle(
                target.window,
                self.sidecar,
                plan.seq,
                dims,
                [plan.used[d] if d != GAUGE else 0 for d in dims],
                [plan.give_back.get(d, 0) for d in dims],
                self.ttl_ms,
            )
            # A resend Redis did not apply was applied before (its seq is ours). A new
            # settle it did not apply was numbered at or below a settle someone else
            # made under this sidecar's id: counted as not settled, numbered again next
            # round above Redis's seq.
            if reply.applied or resend:
                for i in SHARED_SLOTS:
                    settled[i] += plan.used[i]
            else:
                self._seq_taken(target, plan.seq, reply.seq)
            seq = plan.seq
        if plan.wants or reply is None:
            caps = dict(target.caps)
            self.calls += 1
            reply = await self.store.lease(
                target.window,
                self.sidecar,
                self.ttl_ms,
                dims,
                [caps.get(d, 0) for d in dims],
                [plan.wants.get(d, 0) for d in dims],
            )
        await self._synced(target, reply, dims, settled, max(seq, reply.seq), sent_at)

    def _seq_taken(self, target: _Target, seq: int, redis_seq: int) -> None:
        log.error(
            "a settle was refused as a repeat: is this sidecar_id used by another sidecar?",
            extra=fields(key=target.key, seq=seq, redis_seq=redis_seq, sidecar=self.sidecar),
        )

    async def _synced(
        self,
        target: _Target,
        reply: Reply,
        dims: Sequence[int],
        settled: list[int],
        seq: int,
        sent_at: float,
    ) -> None:
        lease = dict(zip(dims, reply.lease, strict=True))
        allowance = [[d, lease[d] if d == GAUGE else settled[d] + lease[d]] for d, _ in target.caps]
        global_used = [0] * VECTOR_SIZE
        for d, used in zip(dims, reply.used, strict=True):
            if d != GAUGE:
                global_used[d] = used
        holds = any(reply.lease)
        lease_until = sent_at + self.settings.lease_ttl_s * (1 - LEASE_MARGIN) if holds else 0.0
        await self.runtime.apply(
            "share_synced",
            {
                "key": target.key,
                "window_start": target.share.window_start,
                "allowance": allowance,
                "global_used": global_used,
                "settled": settled,
                "seq": seq,
                "sidecars": reply.sidecars,
                "lease_until": lease_until,
            },
        )

    # --- reachability -----------------------------------------------------------------

    async def _lost(self, reason: str) -> None:
        """Redis did not answer: every share that does not know it yet is told."""
        if self.reachable or not self._told:
            log.warning("redis unreachable", extra=fields(reason=reason))
            self.reachable, self._told = False, True
            if self.on_reachability is not None:
                self.on_reachability(False)
        else:
            self._retry_s = min(LAST_RETRY_S, self._retry_s * 2)
        await self.runtime.apply("shares_unreachable", {})

    def _found(self) -> None:
        if not self.reachable or not self._told:
            if self._told:
                log.info("redis reachable again")
            self.reachable, self._told = True, True
            if self.on_reachability is not None:
                self.on_reachability(True)
        self._retry_s = FIRST_RETRY_S


def _window_key(ledger: str, start: float, end: float) -> GlobalKey:
    """Redis's name of one window: its index (its start in unix seconds; 0 for a
    lifetime window, whose keys never expire) and when its keys may go."""
    if math.isinf(end):
        return GlobalKey(ledger, 0, None)
    return GlobalKey(ledger, int(start), int(end * 1000))


def _settled_up(closing: Closing) -> bool:
    """Nothing of a closing share is left to send: no settle in flight, nothing
    unsettled, nothing of its lease kept."""
    share, counts = closing.share, closing.counts
    if share.settling is not None:
        return False
    if any(planning.remaining(share, d, counts, 0) > 0 for d in share.allowance):
        return False
    owed = unsettled(counts, share)
    return not any(owed[i] for i in SHARED_SLOTS)


def _leased_caps(ledger: Ledger) -> list[tuple[int, int]]:
    """The caps a lease bounds: a hard policy's (soft and shadow ones only settle)."""
    if ledger.policy.enforcement is not Enforcement.HARD:
        return []
    return [(int(d), limit) for d, limit in ledger.caps]


def _dims(target: _Target) -> list[int]:
    """The dimensions of every call on the window: its totals and the leased gauge."""
    extra = [d for d, _ in target.caps if d not in SHARED_SLOTS]
    return [*COUNTER_DIMS, *extra]


def _observe(demand: _Demand, target: _Target, min_slice: float, max_slice: float) -> None:
    """Own use per leased dimension since the last look, as the slice's aim should see
    it. A share that ran dry (what is left is no more than the last interval used)
    counts at least its last aim, so the next aim doubles: a slice the lease kept small
    (calls denied, so little use to see) grows back in a few rounds."""
    share, counts, reserved = target.share, target.counts, target.reserved
    for d, limit in target.caps:
        own = counts[d] if d == GAUGE else counts[d] - share.absorbed[d]
        before = demand.last.get(d, own)
        used = own if d == GAUGE else max(0, own - before)
        held = reserved[d] if d < len(reserved) else 0
        if planning.remaining(share, d, counts, held) <= used:
            used = max(used, demand.aimed.get(d, 0))
        demand.recent[d] = used
        demand.last[d] = own
        demand.aimed[d] = planning.aim(limit, used, min_slice, max_slice)
