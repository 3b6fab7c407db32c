"""The SDK across daemon restarts and drains, and after answers that were lost.

A restart is `Daemon.restart()`: the server stops and a new one starts on the same socket
path with a fresh engine, so it has forgotten every run, reservation and event seq (state
is not persisted yet) — the hardest case for a client that must keep the agent running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from budgetd.runtime import Durability
from budgetd_client import (
    AsyncBudgetClient,
    BudgetClient,
    BudgetdError,
    BudgetdUnavailable,
    Event,
    EventKind,
    NotFound,
    Subscription,
    Usage,
)
from budgetd_client.events import Gap
from tests.service.client_support import (
    FAST,
    THREAD,
    Daemon,
    Flaky,
    Seen,
    drain_streams,
    ledger,
    live_subscribers,
    subscribers,
    wait_until,
)
from tests.service.support import Served

AGENT = {"agent": "a"}
AGENT_KEY = "per-agent{agent=a}"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path)
    yield daemon
    daemon.stop()


def reachable(client: BudgetClient) -> None:
    """Wait until a call reaches the (re)started daemon (the channel reconnects at FAST)."""

    def answered() -> bool:
        try:
            return not client.check(THREAD, Usage(1)).offline
        except BudgetdUnavailable:
            return False

    wait_until(answered, "the client to reach the daemon")


class Reader:
    """Iterates a subscription in a thread (it resubscribes only while iterated)."""

    def __init__(self, events: Subscription) -> None:
        self.events = events
        self.got: list[Event] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.events:
                self.got.append(event)
        except BudgetdError as error:
            self.error = error

    def wait_for(self, count: int) -> list[Event]:
        wait_until(lambda: len(self.got) >= count or self.error is not None, f"{count} events")
        assert self.error is None, self.error
        return self.got

    def stop(self) -> None:
        self.events.close()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def reconnected(reader: Reader, times: int) -> Callable[[], bool]:
    return lambda: reader.events.reconnects == times


def resilient(target: str, **options: object) -> BudgetClient:
    """A client whose resubscription outlasts a test daemon's restart by far."""
    return BudgetClient(
        target,
        backoff=FAST,
        resubscribe_attempts=1000,
        resubscribe_backoff=FAST,
        **options,  # type: ignore[arg-type]
    )


# --- subscriptions ---------------------------------------------------------------------


def test_a_subscription_survives_a_daemon_restart_with_a_gap(daemon: Daemon) -> None:
    served = daemon.start()
    with resilient(daemon.target) as client:
        reader = Reader(client.subscribe(kinds=[EventKind.usage_recorded]))
        wait_until(lambda: subscribers(served) == 1, "the subscription")
        client.consume(THREAD, Usage(1))
        reader.wait_for(1)
        served = daemon.restart()
        wait_until(lambda: subscribers(served) == 1, "the subscription on the new daemon")
        client.consume(THREAD, Usage(2))
        got = reader.wait_for(3)
        reader.stop()
    assert [(e.kind, e.seq) for e in got] == [
        (EventKind.usage_recorded, 1),
        (EventKind.gap, 0),  # the resume point 1 is beyond the new daemon's newest seq
        (EventKind.usage_recorded, 1),
    ]
    assert got[1].payload == Gap(1)
    assert reader.events.reconnects >= 1


def test_with_a_journal_a_resumed_subscription_misses_nothing_across_a_restart(
    tmp_path: Path,
) -> None:
    daemon = Daemon(tmp_path, Durability.JOURNAL)
    served = daemon.start()
    try:
        with resilient(daemon.target) as client:
            reader = Reader(client.subscribe(kinds=[EventKind.usage_recorded]))
            wait_until(lambda: subscribers(served) == 1, "the subscription")
            client.consume(THREAD, Usage(1))
            reader.wait_for(1)
            served = daemon.restart()  # no final snapshot: recovery replays the journal
            wait_until(lambda: subscribers(served) == 1, "the subscription on the new daemon")
            client.consume(THREAD, Usage(2))
            got = reader.wait_for(2)
            reader.stop()
    finally:
        daemon.stop()
    assert [(e.kind, e.seq) for e in got] == [
        (EventKind.usage_recorded, 1),
        (EventKind.usage_recorded, 2),  # numbering went on; nothing was skipped
    ]


def test_the_failure_count_restarts_at_each_accepted_resubscription(served: Served) -> None:
    # Two failures in a row are allowed; four drains without any event in between pass
    # only if each accepted resubscription (its headers) starts the count again.
    client = BudgetClient(served.target, resubscribe_attempts=2, resubscribe_backoff=FAST)
    with client:
        reader = Reader(client.subscribe())
        for drains in range(1, 5):
            wait_until(lambda: live_subscribers(served) == 1, "an accepted subscription")
            drain_streams(served)
            wait_until(reconnected(reader, drains), "a resubscription")
        wait_until(lambda: live_subscribers(served) == 1, "an accepted subscription")
        client.consume(THREAD, Usage(1))
        (event,) = reader.wait_for(1)
        reader.stop()
    assert (event.kind, event.seq) == (EventKind.usage_recorded, 1)
    assert reader.events.reconnects == 4


def test_before_the_first_event_the_stream_resumes_from_where_it_started(
    served: Served,
) -> None:
    with resilient(served.target) as client:
        client.consume(THREAD, Usage(1))
        client.consume(THREAD, Usage(2))
        reader = Reader(client.subscribe())  # "from now": after seq 2, says the header
        wait_until(lambda: live_subscribers(served) == 1, "the subscription")
        events = served.runtime.events
        served.in_loop(events.close)  # draining: the stream ends, resubscriptions fail
        client.consume(THREAD, Usage(3))  # seq 3, while the subscriber is away
        wait_until(lambda: reader.events.reconnects >= 1, "a failed resubscription")
        served.in_loop(lambda: setattr(events, "closed", False))
        (event,) = reader.wait_for(1)
        reader.stop()
    assert event.seq == 3  # not lost: the resume point was 2 before any event arrived


def test_an_async_subscription_survives_a_daemon_restart(daemon: Daemon) -> None:
    served = daemon.start()

    async def scenario() -> list[Event]:
        client = AsyncBudgetClient(
            daemon.target, backoff=FAST, resubscribe_attempts=1000, resubscribe_backoff=FAST
        )
        async with client, client.subscribe(kinds=[EventKind.usage_recorded]) as events:
            await asyncio.to_thread(wait_until, lambda: subscribers(served) == 1, "subscribed")
            await client.consume(THREAD, Usage(1))
            got = [await anext(events)]
            new = await asyncio.to_thread(daemon.restart)

            async def after_restart() -> None:
                await asyncio.to_thread(
                    wait_until, lambda: subscribers(new) == 1, "the new subscription"
                )
                await client.consume(THREAD, Usage(2))

            task = asyncio.create_task(after_restart())
            got += [await anext(events), await anext(events)]
            await task
            return got

    got = asyncio.run(scenario())
    assert [(e.kind, e.seq) for e in got] == [
        (EventKind.usage_recorded, 1),
        (EventKind.gap, 0),
        (EventKind.usage_recorded, 1),
    ]


# --- runs and reservations the daemon forgot --------------------------------------------


def test_a_run_the_restarted_daemon_forgot_does_not_crash_the_agent(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    daemon.start()
    seen = Seen()
    client = BudgetClient(
        daemon.target,
        on_unavailable="allow",
        backoff=FAST,
        offline_recheck_s=0,
        interceptors=[Flaky(seen)],
    )
    with client:
        with client.run(AGENT, heartbeat_every_s=3600) as run:
            served = daemon.restart()
            reachable(client)
            with run.reserve(Usage(100)) as held:  # NOT_FOUND for the run: again without it
                held.commit(Usage(80))
            run.consume(Usage(20))
            with run.reserve(Usage(10)) as held:
                held.commit(Usage(5))
        assert run.totals is None  # the daemon could not say: logged, not raised
    assert ledger(served, AGENT_KEY).totals.total_tokens == 105
    reserves = [r.run_id for r in seen.requests("Reserve")]
    assert reserves == [run.id, "", ""]  # one NOT_FOUND, then the run is known forgotten
    assert [r.run_id for r in seen.requests("Consume")] == [""]
    assert caplog.text.count("recorded without the run from now on") == 1  # logged once
    assert "treated as closed" in caplog.text


def test_an_offline_run_never_sends_its_id(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    client = BudgetClient(
        daemon.target,
        on_unavailable="allow",
        retries=0,
        backoff=FAST,
        offline_recheck_s=0,
        interceptors=[Flaky(seen)],
    )
    with client:
        with client.run(AGENT, heartbeat_every_s=0.01) as run:
            assert run.offline
            served = daemon.start()
            reachable(client)
            with run.reserve(Usage(100)) as held:
                assert not held.offline
                held.commit(Usage(80))
            run.consume(Usage(5))
            with pytest.raises(NotFound, match="opened offline"):
                client.heartbeat(run.id)
        assert run.totals is None and run.heartbeats == 0
    sent = [r.run_id for r in seen.requests("Reserve") + seen.requests("Consume")]
    assert sent == ["", ""]
    assert not seen.requests("Heartbeat")
    # Its OpenRun was sent, so it may have opened a run: one CloseRun undoes that.
    assert {r.run_id for r in seen.requests("CloseRun")} == {run.id}
    assert ledger(served, AGENT_KEY).totals.total_tokens == 85


def test_committing_a_reservation_the_daemon_forgot_records_the_usage(daemon: Daemon) -> None:
    daemon.start()
    seen = Seen()
    client = BudgetClient(
        daemon.target,
        on_unavailable="allow",
        backoff=FAST,
        offline_recheck_s=0,
        interceptors=[Flaky(seen)],
    )
    with client:
        held = client.reserve(THREAD, Usage(1000, model="gpt-4o"))
        unused = client.reserve(THREAD, Usage(10))
        served = daemon.restart()
        reachable(client)
        done = held.commit(Usage(700, 100))
        assert not done.offline and done.cost_known  # recorded now, as a Consume
        assert unused.release() is False  # nothing is held any more: not an error
    (commit,) = seen.requests("Commit")
    (consume,) = seen.requests("Consume")
    assert consume.request_id == commit.request_id == held.commit_request_id
    status = ledger(served)
    assert (status.totals.total_tokens, status.totals.requests) == (800, 1)
    assert ledger(served, "model-usage{model=gpt-4o}").totals.requests == 1  # the estimate's


def test_failing_closed_a_forgotten_reservation_is_not_found(daemon: Daemon) -> None:
    daemon.start()
    with BudgetClient(daemon.target, backoff=FAST) as client:
        held = client.reserve(THREAD, Usage(1000))
        served = daemon.restart()
        reachable(client)
        with pytest.raises(NotFound, match="reservation"):
            held.commit(Usage(700))
    assert served.runtime.engine is not None


# --- lost answers of Reserve and OpenRun -------------------------------------------------


def test_a_lost_reserve_answer_answered_offline_is_released_when_the_daemon_answers(
    served: Served,
) -> None:
    seen = Seen(mode="lose", faults=2, methods=("Reserve",))  # both attempts reach it
    client = BudgetClient(
        served.target,
        on_unavailable="allow",
        retries=1,
        backoff=FAST,
        offline_recheck_s=0,
        interceptors=[Flaky(seen)],
    )
    with client:
        with client.reserve(THREAD, Usage(1000)) as held:
            assert held.offline
            assert ledger(served).dimensions[0].reserved == 1000  # the daemon does hold it
            held.commit(Usage(600))  # offline: a buffered Consume
        assert client.flush() == 0  # the Reserve again (answered from memory), its Release
        status = ledger(served)
        assert (status.dimensions[0].reserved, status.reservations) == (0, 0)
        assert (status.totals.total_tokens, status.totals.requests) == (600, 1)

        seen.mode, seen.faults = "lose", 2
        with client.reserve(THREAD, Usage(50)) as unused:  # lost too, released offline
            assert ledger(served).dimensions[0].reserved == 50
        assert unused.offline and unused.released
        client.check(THREAD, Usage(1))  # any call that reaches the daemon undoes it first
        assert (ledger(served).dimensions[0].reserved, ledger(served).reservations) == (0, 0)
    reserves = seen.requests("Reserve")
    assert len(reserves) == 6  # 2 lost + 1 replay, twice
    assert (
        len({r.request_id for r in reserves[:3]}) == len({r.request_id for r in reserves[3:]}) == 1
    )
    assert len(seen.requests("Release")) == 2
    assert ledger(served).totals.total_tokens == 600


def test_a_lost_open_run_answer_answered_offline_is_closed_when_the_daemon_answers(
    served: Served,
) -> None:
    seen = Seen(mode="lose", faults=2, methods=("OpenRun",))
    client = BudgetClient(
        served.target,
        on_unavailable="allow",
        retries=1,
        backoff=FAST,
        offline_recheck_s=0,
        interceptors=[Flaky(seen)],
    )
    with client, client.run(AGENT) as run:
        assert run.offline
        assert ledger(served, "runs").open_runs == 1  # the daemon did open it
        run.consume(Usage(5))  # reaches the daemon: the run is closed first
        assert ledger(served, "runs").open_runs == 0
    (close,) = seen.requests("CloseRun")
    assert close.run_id == run.id
    assert ledger(served, AGENT_KEY).totals.total_tokens == 5


def test_a_reserve_never_sent_leaves_nothing_to_undo(tmp_path: Path) -> None:
    client = BudgetClient(
        f"unix:{tmp_path}/absent.sock", on_unavailable="allow", retries=0, backoff=FAST
    )  # the breaker is on: after the first offline call, nothing is even sent
    with client:
        client.consume(THREAD, Usage(1))
        held = client.reserve(THREAD, Usage(10))
        assert held.offline and len(client._core.orphans) == 0
