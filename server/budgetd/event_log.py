"""The event log behind Subscribe: sequence numbers, bounded retention, subscribers.

Every event the core returns is appended here with the next `seq`, into a ring of the
last `retention` events. A subscriber is a cursor into that ring, not a queue of its
own: publishing costs the same with 0 or 64 subscribers (a flag set per subscriber),
and memory is bounded by the ring. Two things are never silent:
- a subscriber resuming from a seq the ring no longer holds gets a Gap first;
- a subscriber more than `max_lag` events behind the newest one is cut off
  (`SubscriberTooSlow`), and resumes from the last seq it received;
- a subscriber that stops reading is cut off once one send to it has waited
  `send_timeout_s` (the servicer bounds each send: with no new event, the lag check
  never runs again), and resumes from the last seq it received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from budgetd.core import LimitReached
from budgetd.core import events as ev
from budgetd.core.policy import Severity

DEFAULT_SEND_TIMEOUT_S = 30.0


class SubscriberTooSlow(Exception):
    """The subscriber fell more than `max_lag` events behind."""

    def __init__(self, last_delivered: int, max_lag: int) -> None:
        super().__init__(
            f"subscriber fell more than {max_lag} events behind; "
            f"resume with after_seq={last_delivered}"
        )


def stopped_reading(last_delivered: int, send_timeout_s: float) -> str:
    """Why a subscriber whose send waited `send_timeout_s` was cut off."""
    return (
        f"subscriber stopped reading for {send_timeout_s:g} s; "
        f"resume with after_seq={last_delivered}"
    )


@dataclass(frozen=True, slots=True)
class EventFilter:
    selector: tuple[tuple[str, str | None], ...] = ()  # None: the key must be present
    kinds: frozenset[type[object]] = frozenset()  # empty: every kind
    min_severity: Severity | None = None  # applies to ThresholdCrossed only

    @classmethod
    def of(
        cls,
        selector: Mapping[str, str],
        kinds: Iterable[type[object]] = (),
        min_severity: Severity | None = None,
    ) -> EventFilter:
        pairs = tuple((k, None if v == "*" else v) for k, v in selector.items())
        return cls(pairs, frozenset(kinds), min_severity)

    def passes(self, event: ev.Event, labels: Mapping[str, str]) -> bool:
        if self.kinds and type(event) not in self.kinds:
            return False
        if (
            self.min_severity is not None
            and isinstance(event, ev.ThresholdCrossed)
            and event.severity < self.min_severity
        ):
            return False
        if self.selector and not isinstance(event, ev.PolicyChanged):
            for key, wanted in self.selector:
                value = labels.get(key)
                if value is None or (wanted is not None and value != wanted):
                    return False
        return True


@dataclass(slots=True)
class Gap:
    """Events from `after` up to `oldest_available - 1` are no longer retained."""

    oldest_available: int


class Draining(Exception):
    """The daemon is draining: no new subscriptions."""


class Subscription:
    __slots__ = ("closed", "cursor", "filter", "gap_first", "live_from", "wakeup")

    def __init__(self, event_filter: EventFilter, cursor: int, live_from: int) -> None:
        self.filter = event_filter
        self.cursor = cursor  # next seq to deliver
        self.live_from = live_from  # seq of the first event published after subscribing
        self.wakeup = asyncio.Event()
        self.closed = False
        self.gap_first = False


class EventLog:
    def __init__(
        self,
        retention: int,
        max_subscribers: int,
        max_lag: int,
        last_seq: int = 0,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    ) -> None:
        """`last_seq`: where numbering resumes after a restart; events up to it are
        gone, and a subscriber asking for them gets a Gap. `send_timeout_s`: how long
        one send to a subscriber may wait (for the client to read) before it is cut off."""
        self.retention = retention
        self.max_subscribers = max_subscribers
        self.max_lag = max_lag
        self.send_timeout_s = send_timeout_s
        self.last_seq = last_seq
        self.first_seq = last_seq + 1
        self._ring: list[ev.Event | None] = [None] * retention
        self._subscribers: set[Subscription] = set()
        self.closed = False

    @property
    def oldest_seq(self) -> int:
        return max(self.first_seq, self.last_seq - self.retention + 1)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, events: list[ev.Event]) -> None:
        if not events:
            return
        ring, size, seq = self._ring, self.retention, self.last_seq
        for event in events:
            seq += 1
            ring[seq % size] = event
        self.last_seq = seq
        for subscription in self._subscribers:
            subscription.wakeup.set()

    def since(self, after_seq: int) -> list[tuple[int, ev.Event]]:
        """The retained events after `after_seq`, oldest first."""
        ring, size = self._ring, self.retention
        start = max(after_seq + 1, self.oldest_seq)
        return [(seq, ring[seq % size]) for seq in range(start, self.last_seq + 1)]  # type: ignore[misc]

    def subscribe(self, event_filter: EventFilter, after_seq: int | None) -> Subscription:
        """A new cursor: at `after_seq + 1` (replaying what is retained), or at the next
        event. A resume point beyond the newest seq (a client of an earlier run of the
        daemon) starts at the next event with a Gap, so the jump back is explicit."""
        if self.closed:
            raise Draining()
        if len(self._subscribers) >= self.max_subscribers:
            raise LimitReached("max_subscribers", self.max_subscribers)
        live_from = self.last_seq + 1
        cursor = live_from if after_seq is None else after_seq + 1
        subscription = Subscription(event_filter, min(cursor, live_from), live_from)
        subscription.gap_first = cursor > live_from
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription and refuse new ones (the daemon is draining)."""
        self.closed = True
        for subscription in self._subscribers:
            subscription.closed = True
            subscription.wakeup.set()

    def read(self, subscription: Subscription, limit: int) -> list[tuple[int, ev.Event] | Gap]:
        """Up to `limit` retained events for `subscription`, from its cursor on (a Gap
        first when the cursor fell out of the ring); raises `SubscriberTooSlow`."""
        behind_from = max(subscription.cursor, subscription.live_from)
        if self.last_seq - behind_from + 1 > self.max_lag:
            raise SubscriberTooSlow(subscription.cursor - 1, self.max_lag)
        out: list[tuple[int, ev.Event] | Gap] = []
        oldest = self.oldest_seq
        if subscription.gap_first:
            out.append(Gap(subscription.cursor))
            subscription.gap_first = False
        elif subscription.cursor < oldest:
            out.append(Gap(oldest))
            subscription.cursor = oldest
        end = min(self.last_seq, subscription.cursor + limit - 1)
        ring, size = self._ring, self.retention
        for seq in range(subscription.cursor, end + 1):
            event = ring[seq % size]
            assert event is not None
            out.append((seq, event))
        subscription.cursor = end + 1
        return out
