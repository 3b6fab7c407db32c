"""A sidecar's share of a global ledger: what it may still grant, and what it owes Redis.

A global policy's ledger exists on every sidecar whose agents use it. Redis holds its
totals (usage settled by every sidecar) and each sidecar's lease: the part of the cap it
may grant from memory. The core never talks to Redis: the leaser (budgetd.scaleout)
does, and tells the engine what it learnt through the one mutation path
(`Engine.share_synced`, `Engine.share_settling`, `Engine.shares_unreachable`), so a
restart replays it from the journal like any other change.

The ledger's counters are this sidecar's usage plus the usage of the others as Redis
last reported it (`absorbed`): its status, its thresholds and its EXHAUSTED state are
those of the global ledger as far as this sidecar knows, with no change to the hot path.
What a request may take is bounded by the lease as well as by the cap: per capped
dimension, the counters may reach `absorbed + allowance` (`ceiling`), where the
allowance is everything Redis granted this sidecar in the window less what it gave back.

Per window: a ledger that rolls starts a new share; what the old window still owed
Redis goes to `closing` until it is settled (Redis keys windows by their index, so a
late settle still lands in the right one).

One share per Redis window: Redis keeps one lease and one settle sequence per sidecar
and window, so a ledger that closes and opens again within its window (its policy
deleted and put back, or reshaped) takes its closing share back instead of starting a
second one beside it, and its counters continue from where the closed ledger's stood
(`Shares.opened`). A global ledger's window starts at the same instant on every sidecar
(its start is the window's index in Redis: 0 for a lifetime window).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from budgetd.core.dimensions import VECTOR_SIZE, Dimension
from budgetd.core.errors import InvalidArgument
from budgetd.core.events import Event
from budgetd.core.ledger import Ledger, record_usage
from budgetd.core.policy import OnUnavailable
from budgetd.core.results import ShareView

# Counter slots a sidecar settles into Redis: every summed slot (the concurrency gauge
# is leased, not summed; run time and wall clock are measured on one host).
SHARED_SLOTS = tuple(
    i
    for i in range(VECTOR_SIZE)
    if i not in (Dimension.CONCURRENCY, Dimension.RUN_DURATION_MS, Dimension.WALL_CLOCK_MS)
)


# Windows that ended still owing Redis, kept at most (they pile up only while Redis is
# out of reach: one per global ledger per rolled window). Past it the oldest is dropped:
# its usage never reaches Redis's total of that ended window, and `dropped` says how many.
MAX_CLOSING_SHARES = 100_000

# Earlier starts a lifetime share answers to (see Share.legacy_starts), kept at most.
MAX_LEGACY_STARTS = 16

# The largest slice of a cap one lease takes, as a fraction of the cap ([global]
# max_slice): what bounds the overshoot, a slice per live sidecar.
DEFAULT_MAX_SLICE_FRACTION = 0.01


def zeros() -> list[int]:
    return [0] * VECTOR_SIZE


@dataclass(slots=True)
class Settling:
    """A settle sent to Redis (or about to be) and not yet confirmed: resent as is, with
    the same sequence number, until Redis answers (it applies a sequence once)."""

    seq: int
    used: list[int]  # per slot: own usage moving into Redis's totals
    give_back: dict[int, int]  # per capped dimension: allowance returned unused


@dataclass(slots=True)
class Share:
    """This sidecar's part of one window of a global ledger."""

    window_start: float
    # Per capped dimension: what Redis granted this sidecar in the window, less what it
    # gave back (for the concurrency gauge: the slots it holds).
    allowance: dict[int, int] = field(default_factory=dict)
    absorbed: list[int] = field(default_factory=zeros)  # the others' usage, per slot
    settled: list[int] = field(default_factory=zeros)  # own usage Redis has, per slot
    seq: int = 0  # the last settle Redis applied
    settling: Settling | None = None
    sidecars: int = 0  # live sidecars holding a lease on the window, as last seen
    # Wall-clock seconds until which Redis keeps the lease without another renewal.
    lease_until: float = 0.0
    reachable: bool = True
    synced_at: float = 0.0  # when Redis last answered for this share
    # A lifetime window's starts as journals written before lifetime windows started at
    # 0 name it (each ledger's creation: that release gave a reopened ledger a share of
    # its own): replaying such a journal finds the share by them. Not stored: a
    # snapshot written since names the share by its start alone.
    legacy_starts: tuple[float, ...] = ()
    # Two shares of an earlier release are this one (folded at load, or taken back while
    # that release's journal is replayed): its records of them count one share's settles
    # each (see _legacy_settled). Not stored: a snapshot written since holds one share.
    merged: bool = False


def own_used(counts: list[int], share: Share) -> list[int]:
    """This sidecar's own usage in the window, per slot."""
    absorbed = share.absorbed
    return [counts[i] - absorbed[i] for i in range(VECTOR_SIZE)]


def unsettled(counts: list[int], share: Share) -> list[int]:
    """Own usage Redis has not got (nor is being sent), per slot; 0 outside SHARED_SLOTS."""
    owed = zeros()
    absorbed, settled = share.absorbed, share.settled
    sending = share.settling.used if share.settling is not None else None
    for i in SHARED_SLOTS:
        owed[i] = counts[i] - absorbed[i] - settled[i] - (sending[i] if sending else 0)
    return owed


def ceiling(
    share: Share | None,
    dimension: int,
    limit: int,
    count: int,
    on_unavailable: OnUnavailable,
    now: float,
) -> int:
    """The most the ledger's counter of `dimension` may reach for a new grant, when the
    cap is `limit` and the counter stands at `count`: the lease's end while Redis keeps
    it, no more than what is used once it lapsed, the cap alone while Redis is out of
    reach and the policy allows judging locally."""
    if share is None:
        return count if on_unavailable is OnUnavailable.DENY else limit
    if not share.reachable and on_unavailable is OnUnavailable.ALLOW_LOCAL:
        return limit
    if now >= share.lease_until:  # lapsed: Redis may have handed it to others
        return min(limit, count)
    base = 0 if dimension == Dimension.CONCURRENCY else share.absorbed[dimension]
    return min(limit, base + share.allowance.get(dimension, 0))


def bound_of(limit: int, max_slice_fraction: float, sidecars: int) -> int:
    """The most that can be granted past a hard cap: a slice per live sidecar."""
    return max_slice(limit, max_slice_fraction) * max(1, sidecars)


def max_slice(limit: int, max_slice_fraction: float) -> int:
    """The largest slice of a cap one lease takes (at least one unit)."""
    return max(1, int(limit * max_slice_fraction))


def view(
    share: Share,
    counts: list[int],
    caps: tuple[tuple[Dimension, int], ...],
    max_slice_fraction: float,
    now: float,
) -> ShareView:
    owed = unsettled(counts, share)
    used = own_used(counts, share)
    global_used: dict[int, int] = {}
    remaining: dict[int, int] = {}
    bound: dict[int, int] = {}
    owed_by: dict[int, int] = {}
    for dimension, limit in caps:
        d = int(dimension)
        global_used[d] = counts[d]
        grant = share.allowance.get(d, 0) if now < share.lease_until else 0
        remaining[d] = max(0, grant - used[d])
        bound[d] = bound_of(limit, max_slice_fraction, share.sidecars)
        owed_by[d] = owed[d] if d != Dimension.CONCURRENCY else 0
    return ShareView(
        global_used,
        remaining,
        bound,
        share.sidecars,
        share.reachable,
        share.lease_until,
        share.synced_at,
        owed_by,
    )


@dataclass(slots=True)
class Closing:
    """A share of a window that ended (or a ledger that closed) with something still
    owed to Redis: usage to settle, allowance to give back. `counts` are the ledger's
    counters when the window ended, `window_end` when it ended (inf: a lifetime window,
    whose ledger closed)."""

    share: Share
    counts: list[int]
    window_end: float


def _pairs(amounts: Iterable[Sequence[int]], where: str) -> dict[int, int]:
    result: dict[int, int] = {}
    for item in amounts:
        if len(item) != 2 or item[1] < 0:
            raise InvalidArgument(where, "must be [dimension, amount >= 0] pairs")
        result[int(Dimension(item[0]))] = int(item[1])
    return result


def _vector(values: Sequence[int], where: str) -> list[int]:
    if len(values) != VECTOR_SIZE or any(v < 0 for v in values):
        raise InvalidArgument(where, f"must be {VECTOR_SIZE} counts >= 0")
    return [int(v) for v in values]


class Shares:
    """The shares of every global ledger of one engine, live and closing.

    Owned by the engine, which calls `opened`, `rolled` and `closed` as its global
    ledgers come and go, and `synced`, `settling` and `unreachable` for the mutations of
    the same names."""

    def __init__(
        self, ledgers: Mapping[str, Ledger], max_closing: int = MAX_CLOSING_SHARES
    ) -> None:
        self._ledgers = ledgers
        self.max_closing = max_closing
        self.live: dict[str, Share] = {}
        self.closing: dict[tuple[str, float], Closing] = {}
        self.dropped = 0  # closing shares dropped at MAX_CLOSING_SHARES (since start)
        # Whether Redis answered the leaser's last round: what a share opened now starts
        # from (one opened while Redis is out of reach is judged by on_unavailable at once).
        self.reachable = True
        # While the journal of a state an earlier release wrote is replayed: its records
        # of merged shares follow that release's rules (see `synced`, `settling`). Set
        # and cleared by the engine.
        self.earlier_release = False

    def any(self) -> bool:
        return bool(self.live or self.closing)

    def of(self, ledger: Ledger) -> Share | None:
        """The share of a live ledger's current window (None: not leased yet)."""
        share = self.live.get(ledger.key)
        if share is None or share.window_start != ledger.window_start:
            return None
        return share

    def opened(self, ledger: Ledger, now: float) -> list[int] | None:
        """A global ledger opened: its share, taken back from `closing` when its window's
        share is still there (None: a new share), else the closed ledger's counters at
        its close, which the new ledger continues from (own usage and the others' alike:
        the share's settled and absorbed amounts are counted in them). `now`: the
        instant of opening."""
        closing = self.closing.pop((ledger.key, ledger.window_start), None)
        share = Share(ledger.window_start) if closing is None else closing.share
        share.merged = share.merged or (closing is not None and self.earlier_release)
        # (One taken back stays unreachable if it was: it has not heard from Redis since.)
        share.reachable = share.reachable and self.reachable
        if math.isinf(ledger.window_end):
            share.legacy_starts = (*share.legacy_starts[-MAX_LEGACY_STARTS + 1 :], now)
        self.live[ledger.key] = share
        return None if closing is None else closing.counts

    def rolled(self, ledger: Ledger, counts: list[int], old_start: float, old_end: float) -> None:
        """`ledger` moved on from the window [old_start, old_end), where its counters
        stood at `counts`. (A global concurrency cap has a lifetime window, so
        no slots are held across a roll: policy.GLOBAL_CONCURRENCY_RULE.)"""
        old = self.live.get(ledger.key)
        if old is not None and old.window_start == old_start:
            self._close(ledger.key, Closing(old, counts, old_end))
        self.live[ledger.key] = Share(ledger.window_start, reachable=self.reachable)

    def closed(self, ledger: Ledger) -> None:
        """`ledger` is gone: all it holds goes back, what it used still settles."""
        old = self.live.pop(ledger.key, None)
        if old is not None:
            self._close(ledger.key, Closing(old, ledger.counts(), ledger.window_end))

    def _close(self, key: str, closing: Closing) -> None:
        if len(self.closing) >= self.max_closing:
            del self.closing[next(iter(self.closing))]  # the oldest (insertion order)
            self.dropped += 1
        self.closing[(key, closing.share.window_start)] = closing

    def _find(
        self, key: str, window_start: float
    ) -> tuple[Share, Ledger | None, Closing | None] | None:
        share = self.live.get(key)
        if share is not None and share.window_start == window_start:
            return share, self._ledgers.get(key), None
        closing = self.closing.get((key, window_start))
        if closing is not None:
            return closing.share, None, closing
        if window_start == 0:
            return None
        # A record written before lifetime windows started at 0 (see legacy_starts).
        if share is not None and window_start in share.legacy_starts:
            return share, self._ledgers.get(key), None
        closing = self.closing.get((key, 0.0))
        if closing is not None and window_start in closing.share.legacy_starts:
            return closing.share, None, closing
        return None

    def synced(
        self,
        key: str,
        window_start: float,
        allowance: Iterable[Sequence[int]],
        global_used: Sequence[int],
        settled: Sequence[int],
        seq: int,
        sidecars: int,
        lease_until: float,
        now: float,
        events: list[Event],
    ) -> bool:
        """Redis answered for the share: what it holds now. The others' usage Redis
        reported is folded into the ledger's counters (crossing thresholds as usage
        does). False: the share is gone (its ledger closed and settled), nothing to do."""
        granted = _pairs(allowance, "allowance")
        used = _vector(global_used, "global_used")
        own = _vector(settled, "settled")
        found = self._find(key, window_start)
        if found is None:
            return False
        share, ledger, closing = found
        if self.earlier_release and share.merged:
            own = _legacy_settled(share, seq)
        if share.settling is not None and seq >= share.settling.seq:
            share.settling = None
        share.seq = max(share.seq, seq)
        share.settled, share.allowance = own, granted
        share.sidecars, share.lease_until = sidecars, lease_until
        share.reachable, share.synced_at = True, now
        self.reachable = True
        others = list(share.absorbed)
        for i in SHARED_SLOTS:  # (never less: Redis lost data, or a reply arrived late)
            others[i] = max(others[i], used[i] - own[i])
        if others != share.absorbed:
            delta = tuple(others[i] - share.absorbed[i] for i in range(VECTOR_SIZE))
            if ledger is not None:
                record_usage((ledger,), delta, now, events)
            elif closing is not None:  # its counts are own usage + the others', too
                closing.counts = [c + d for c, d in zip(closing.counts, delta, strict=True)]
        share.absorbed = others
        return True

    def settling(
        self,
        key: str,
        window_start: float,
        seq: int,
        used: Sequence[int],
        give_back: Iterable[Sequence[int]],
    ) -> bool:
        """A settle is about to go to Redis: kept until Redis confirms it (`synced`
        with its seq), so a restart resends it as is. What it gives back is no longer
        granted from now on."""
        sending = _vector(used, "used")
        returned = _pairs(give_back, "give_back")
        found = self._find(key, window_start)
        if found is None:
            return False
        share = found[0]
        if seq <= share.seq:
            if self.earlier_release:
                # That release numbered a reopened ledger's settles from 1 again, and this
                # share is both's now: what it sent, Redis refused as a repeat.
                return False
            raise InvalidArgument("seq", f"must be above the last applied ({share.seq})")
        for d, amount in returned.items():
            share.allowance[d] = max(0, share.allowance.get(d, 0) - amount)
        share.settling = Settling(seq, sending, returned)
        return True

    def unreachable(self) -> bool:
        """Redis did not answer a round: every share (a closing one may be taken back),
        and any opened from now until Redis answers again, is judged by its policy's
        on_unavailable. False: nothing changed (already known)."""
        changed = self.reachable
        self.reachable = False
        for share in self.live.values():
            changed = changed or share.reachable
            share.reachable = False
        for closing in self.closing.values():
            changed = changed or closing.share.reachable
            closing.share.reachable = False
        return changed

    def unreachable_share(self, key: str, window_start: float) -> bool:
        """One share marked unreachable: what journals written before Redis's
        reachability was one round's (`unreachable`) say. False: no such share."""
        found = self._find(key, window_start)
        if found is None:
            return False
        found[0].reachable = False
        return True

    def settled_up(self, key: str, window_start: float) -> bool:
        """A closing share owes Redis nothing more: forget it. False: no such share, or
        it still owes usage (a settle in flight, or usage recorded since the leaser
        looked: the share was taken back by a ledger that opened again, and closed)."""
        found = self._find(key, window_start)
        closing = None if found is None else found[2]
        if closing is None or closing.share.settling is not None:
            return False
        owed = unsettled(closing.counts, closing.share)
        if any(owed[i] for i in SHARED_SLOTS):
            return False
        del self.closing[(key, closing.share.window_start)]
        return True

    # --- snapshots -------------------------------------------------------------------

    def to_plain(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "live": [[key, _share_plain(share)] for key, share in self.live.items()],
            "closing": [
                [key, _share_plain(c.share), list(c.counts), _end_plain(c.window_end)]
                for (key, _), c in self.closing.items()
            ],
        }

    def load_plain(self, data: Mapping[str, Any]) -> None:
        """Shares from `to_plain`, after the ledgers (restored first: a live lifetime
        share's window start is its ledger's)."""
        self.reachable = bool(data.get("reachable", True))
        for key, plain in data.get("live", ()):
            share = _share_from_plain(plain)
            ledger = self._ledgers.get(key)
            if ledger is not None and math.isinf(ledger.window_end):
                _epoch_start(share)
            self.live[key] = share
        for key, plain, counts, end in data.get("closing", ()):
            share = _share_from_plain(plain)
            window_end = math.inf if end is None else float(end)
            if math.isinf(window_end):
                _epoch_start(share)
            closing = Closing(share, list(counts), window_end)
            if not self._merged(key, closing):
                self._close(key, closing)

    def _merged(self, key: str, older: Closing) -> bool:
        """Two shares of one window, as states of earlier releases could hold (a ledger
        closed and opened again got a share of its own; a lifetime window's shares
        started at their ledgers' creation): one share, whose own usage and settles are
        both's. False: no other share of its window."""
        start = older.share.window_start
        live = self.live.get(key)
        ledger = self._ledgers.get(key)
        newer = self.closing.get((key, start))
        if live is not None and live.window_start == start and ledger is not None:
            kept = live
            ledger.set_counts(_folded(ledger.counts(), kept, older))
            # (Its state and next thresholds from the counters as they now stand; what
            # fired before stays fired, as in a restore: nothing is announced.)
            ledger.reset_triggers()
            ledger.refresh_levels(ledger.last_use or ledger.anchor, [])
        elif newer is not None:
            kept = newer.share
            newer.counts = _folded(newer.counts, kept, older)
        else:
            return False
        starts = {*kept.legacy_starts, *older.share.legacy_starts}
        kept.legacy_starts = tuple(sorted(starts)[-MAX_LEGACY_STARTS:])  # (the newest)
        kept.merged = True
        return True


def _folded(counts: list[int], kept: Share, older: Closing) -> list[int]:
    """`counts` of `kept`'s window with `older`'s own usage in them, `kept` taking
    `older`'s settles as its own. What `older` settled, `kept` heard of from Redis as
    the others' usage (at most all of it, if it synced since): that part moves from
    `absorbed` to `settled` (a next answer from Redis raises `absorbed` again if less
    of it had)."""
    share, own = older.share, _own(older)
    folded = list(counts)
    for i in SHARED_SLOTS:
        known = min(share.settled[i], kept.absorbed[i])
        kept.absorbed[i] -= known
        kept.settled[i] += share.settled[i]
        folded[i] += own[i] - known
    # A settle in flight numbered at or below the other share's last is one Redis
    # refused as a repeat (one number per sidecar and window): its usage is sent again.
    mine = kept.settling if kept.settling and kept.settling.seq > share.seq else None
    theirs = share.settling if share.settling and share.settling.seq > kept.seq else None
    kept.seq = max(kept.seq, share.seq)
    if theirs is not None and mine is not None:
        # Two in flight: the older went first, taken as applied (and `mine`, if numbered
        # at or below it, as refused).
        for i in SHARED_SLOTS:
            kept.settled[i] += theirs.used[i]
        kept.seq = max(kept.seq, theirs.seq)
        kept.settling = mine if mine.seq > theirs.seq else None
    else:
        kept.settling = mine or theirs  # (one in flight is resent as is: applied once)
    return folded


def _legacy_settled(share: Share, seq: int) -> list[int]:
    """What `share` has settled once Redis answered, under `seq`, a record an earlier
    release wrote. That release gave each ledger opened again in its window a share of
    its own (now one: `opened` takes it back, `_merged` folds two), whose records count
    only that share's settles: they are counted here as their settle records were
    accepted (`settling`) and confirmed (a seq at or above theirs), never from what
    such a record says."""
    settled = list(share.settled)
    sending = share.settling
    if sending is not None and seq >= sending.seq:
        for i in SHARED_SLOTS:
            settled[i] += sending.used[i]
    return settled


def _epoch_start(share: Share) -> None:
    """A lifetime share stored before lifetime windows started at 0: its start is its
    window's index in Redis, 0; records journaled since name the old one (legacy_starts)."""
    if share.window_start != 0:
        share.legacy_starts, share.window_start = (share.window_start,), 0.0


def _own(closing: Closing) -> list[int]:
    """A closing share's own usage in its window, in the slots that settle."""
    used = own_used(closing.counts, closing.share)
    return [used[i] if i in SHARED_SLOTS else 0 for i in range(VECTOR_SIZE)]


def _end_plain(end: float) -> float | None:
    return None if math.isinf(end) else end  # (JSON has no infinity)


def _share_plain(share: Share) -> list[Any]:
    settling = share.settling
    return [
        share.window_start,
        [[d, a] for d, a in share.allowance.items()],
        list(share.absorbed),
        list(share.settled),
        share.seq,
        None
        if settling is None
        else [settling.seq, list(settling.used), [[d, a] for d, a in settling.give_back.items()]],
        share.sidecars,
        share.lease_until,
        share.reachable,
        share.synced_at,
    ]


def _share_from_plain(plain: Sequence[Any]) -> Share:
    start, allowance, absorbed, settled, seq, settling, sidecars, until, reachable, at = plain
    return Share(
        float(start),
        {int(d): int(a) for d, a in allowance},
        list(absorbed),
        list(settled),
        int(seq),
        None
        if settling is None
        else Settling(int(settling[0]), list(settling[1]), {int(d): a for d, a in settling[2]}),
        int(sidecars),
        float(until),
        bool(reachable),
        float(at),
    )
