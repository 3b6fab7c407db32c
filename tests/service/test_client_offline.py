"""The SDK when the daemon is unreachable: fail closed, or fail open with a buffer.

The client points at the socket the first `make_served()` will create
(`tmp_path/s0/budgetd.sock`) before any server exists, works offline, then the server
starts on that path and the buffer is replayed into it.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from budgetd_client import (
    AsyncBudgetClient,
    BudgetClient,
    BudgetdUnavailable,
    Decision,
    Usage,
)
from budgetd_client._breaker import Breaker, Gate
from budgetd_client._replay import flush_at_exit
from tests.service.client_support import (
    FAST,
    THREAD,
    Flaky,
    Seen,
    ledger,
    wait_until,
)
from tests.service.support import ManualClock, Served


def first_socket(tmp_path: Path) -> str:
    """The target of the server the first make_served() call will start."""
    return f"unix:{tmp_path}/s0/budgetd.sock"


def fail_open(target: str, **options: object) -> BudgetClient:
    """A fail-open client that rechecks the daemon on every call (no circuit breaker: the
    tests start the daemon and expect the next call to find it)."""
    options.setdefault("offline_recheck_s", 0)
    return BudgetClient(target, on_unavailable="allow", retries=1, backoff=FAST, **options)  # type: ignore[arg-type]


def flushed(client: BudgetClient) -> None:
    """Flush until the freshly started daemon answers (the channel reconnects at FAST)."""
    wait_until(lambda: client.flush() == 0, "the buffer to drain")


def test_fail_closed_raises_budgetd_unavailable(tmp_path: Path) -> None:
    with BudgetClient(f"unix:{tmp_path}/absent.sock", retries=2, backoff=FAST) as client:
        with pytest.raises(BudgetdUnavailable, match="after 3 attempts"):
            client.consume(THREAD, Usage(1))
        with pytest.raises(BudgetdUnavailable):
            client.reserve(THREAD, Usage(1))
        with pytest.raises(BudgetdUnavailable):
            client.check(THREAD, Usage(1))
        assert client.buffered == 0


def test_fail_open_allows_offline_and_buffers_usage(tmp_path: Path) -> None:
    with fail_open(f"unix:{tmp_path}/absent.sock") as client:
        check = client.check(THREAD, Usage(1))
        assert (check.decision, check.offline) == (Decision.allow, True)
        run = client.open_run(THREAD)
        assert run.offline and run.expires_at is None
        held = client.reserve(THREAD, Usage(100))
        assert held.offline and held.expires_at is None and held.id.startswith("offline-")
        assert client.consume(THREAD, Usage(5)).offline
        assert held.commit(Usage(90)).offline
        assert client.buffered == 2
        with pytest.raises(BudgetdUnavailable):
            client.get_ledger("per-thread{thread=t1}")  # nothing to allow: raised


def test_buffered_usage_is_replayed_once_the_daemon_is_back(
    tmp_path: Path, make_served: Callable[..., Served]
) -> None:
    with fail_open(first_socket(tmp_path)) as client:
        for tokens in (1, 2, 3):
            assert client.consume(THREAD, Usage(tokens)).offline
        assert client.buffered == 3
        served = make_served()
        flushed(client)
        totals = ledger(served).totals
        assert (totals.requests, totals.total_tokens) == (3, 6)
        assert client.dropped_records == 0


def test_the_buffer_is_replayed_before_the_next_call(
    tmp_path: Path, make_served: Callable[..., Served]
) -> None:
    with fail_open(first_socket(tmp_path)) as client:
        client.consume(THREAD, Usage(7))
        served = make_served()

        def replayed_by_a_call() -> bool:
            return not client.check(THREAD, Usage(1)).offline

        wait_until(replayed_by_a_call, "a call that reaches the daemon")
        assert client.buffered == 0
        assert ledger(served).totals.total_tokens == 7


def test_a_record_the_server_already_has_is_not_counted_twice(
    tmp_path: Path, make_served: Callable[..., Served]
) -> None:
    seen = Seen(mode="drop", faults=1_000)  # unreachable, as far as the client can tell
    with fail_open(first_socket(tmp_path), interceptors=[Flaky(seen)]) as client:
        served = make_served()
        client.consume(THREAD, Usage(10))
        client.consume(THREAD, Usage(20))
        assert client.buffered == 2
        first = seen.requests("Consume")[0]
        assert served.budget.Consume(first).replayed is False  # it did get through
        seen.mode = "pass"
        flushed(client)
        totals = ledger(served).totals
        assert (totals.requests, totals.total_tokens) == (2, 30)
        assert served.budget.Consume(first).replayed  # the replay was answered from memory


def test_offline_reservation_commits_into_the_buffer(
    tmp_path: Path, make_served: Callable[..., Served]
) -> None:
    with fail_open(first_socket(tmp_path)) as client:
        with client.reserve(THREAD, Usage(100, model="gpt-4o")) as held:
            held.commit(Usage(80, 20))
        with client.reserve(THREAD, Usage(100)):
            pass  # released: nothing to record
        assert client.buffered == 1
        served = make_served()
        flushed(client)
    status = ledger(served)
    assert (status.totals.total_tokens, status.totals.requests) == (100, 1)
    model = ledger(served, "model-usage{model=gpt-4o}")  # the estimate's model applied
    assert model.totals.requests == 1


def test_a_commit_that_cannot_be_sent_is_buffered_and_the_hold_released(
    served: Served,
) -> None:
    seen = Seen()
    with fail_open(served.target, interceptors=[Flaky(seen)]) as client:
        held = client.reserve(THREAD, Usage(1000))
        seen.mode, seen.faults = "drop", 2  # the commit's attempts are lost
        assert held.commit(Usage(700)).offline
        assert client.buffered == 1
        flushed(client)
    status = ledger(served)
    assert (status.totals.total_tokens, status.totals.requests) == (700, 1)
    assert (status.dimensions[0].reserved, status.reservations) == (0, 0)


def test_a_lost_commit_answer_is_not_counted_twice(served: Served) -> None:
    seen = Seen()
    with fail_open(served.target, interceptors=[Flaky(seen)]) as client:
        held = client.reserve(THREAD, Usage(1000))
        seen.mode, seen.faults = "lose", 2  # the commit gets through, its answers do not
        assert held.commit(Usage(700)).offline
        flushed(client)  # the Consume with the commit's request_id: ALREADY_EXISTS
        assert client.dropped_records == 0
    status = ledger(served)
    assert (status.totals.total_tokens, status.totals.requests) == (700, 1)


def test_a_full_buffer_drops_the_oldest_counts_and_warns(
    tmp_path: Path, make_served: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    with fail_open(first_socket(tmp_path), buffer_size=2) as client:
        for tokens in (1, 2, 4):
            client.consume(THREAD, Usage(tokens))
        assert (client.buffered, client.dropped_records) == (2, 1)
        (warning,) = [
            r for r in caplog.records if r.levelname == "WARNING" and "dropped" in r.message
        ]
        assert "offline buffer is full" in warning.message and "1 input" in warning.message
        served = make_served()
        flushed(client)
    assert ledger(served).totals.total_tokens == 6  # the two newest


def test_a_record_the_server_rejects_on_replay_is_dropped_and_counted(
    tmp_path: Path, make_served: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    with fail_open(first_socket(tmp_path)) as client:
        client.consume({"Bad Key": "x"}, Usage(1))
        client.consume(THREAD, Usage(2))
        served = make_served()
        flushed(client)
        assert client.dropped_records == 1
    assert "rejected" in caplog.text and "Bad Key" in caplog.text
    assert ledger(served).totals.total_tokens == 2


def test_records_still_buffered_at_close_are_dropped_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = fail_open(f"unix:{tmp_path}/absent.sock")
    client.consume(THREAD, Usage(1))
    client.close()
    assert (client.buffered, client.dropped_records) == (0, 1)
    assert "the client was closed" in caplog.text


def test_an_offline_run_block_neither_heartbeats_nor_closes(tmp_path: Path) -> None:
    with fail_open(f"unix:{tmp_path}/absent.sock") as client:
        with client.run(THREAD, heartbeat_every_s=0.01) as run:
            assert run.offline
            run.consume(Usage(3))
        assert run.totals is None and run.heartbeats == 0
        assert client.buffered == 1  # the run's usage waits for the daemon


# --- at exit -----------------------------------------------------------------------------


def test_the_exit_hook_counts_and_warns_what_it_cannot_deliver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("budgetd_client._replay.EXIT_FLUSH_S", 0.1)  # it waits for the daemon
    client = fail_open(f"unix:{tmp_path}/absent.sock")
    client.consume(THREAD, Usage(1))
    client.consume(THREAD, Usage(2))
    flush_at_exit(weakref.ref(client))  # what atexit runs
    assert (client.buffered, client.dropped_records) == (0, 2)
    assert "2 buffered usage record(s) could not be delivered" in caplog.text
    assert "dropped_records" in caplog.text
    client.close()


def test_the_exit_hook_delivers_to_a_daemon_that_is_back(
    tmp_path: Path, make_served: Callable[..., Served]
) -> None:
    client = fail_open(first_socket(tmp_path))
    client.consume(THREAD, Usage(7))
    served = make_served()
    flush_at_exit(weakref.ref(client))  # waits for the channel to connect, within its bound
    assert (client.buffered, client.dropped_records) == (0, 0)
    assert ledger(served).totals.total_tokens == 7
    client.close()


def test_the_exit_hook_of_an_async_client_works_without_its_event_loop(
    tmp_path: Path, make_served: Callable[..., Served]
) -> None:
    client = AsyncBudgetClient(
        first_socket(tmp_path),
        on_unavailable="allow",
        retries=0,
        backoff=FAST,
        offline_recheck_s=0,
    )

    async def offline() -> None:
        assert (await client.consume(THREAD, Usage(9))).offline

    asyncio.run(offline())  # the loop is gone when the process exits
    served = make_served()
    flush_at_exit(weakref.ref(client))
    assert (client.buffered, client.dropped_records) == (0, 0)
    assert ledger(served).totals.total_tokens == 9


def test_the_exit_hook_does_not_keep_a_client_alive(tmp_path: Path) -> None:
    client = BudgetClient(f"unix:{tmp_path}/absent.sock")
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None
    flush_at_exit(ref)  # a hook whose client is gone does nothing


# --- the heartbeat thread ----------------------------------------------------------------


def test_heartbeats_never_replay_the_buffer(served: Served) -> None:
    seen = Seen()
    client = fail_open(served.target, interceptors=[Flaky(seen)])
    with client, client.run(THREAD, heartbeat_every_s=0.01) as run:
        seen.mode, seen.faults, seen.methods = "drop", 1_000, ("Consume",)
        assert run.consume(Usage(5)).offline
        beats = run.heartbeats
        wait_until(lambda: run.heartbeats >= beats + 3, "heartbeats while usage is buffered")
        assert client.buffered == 1
        assert not [t for t in seen.threads_of("Consume") if t.startswith("budgetd-heartbeat")]
        seen.mode = "pass"
    assert client.buffered == 0  # the agent's own next call (the CloseRun) delivered it
    assert ledger(served, "per-agent{agent=writer}").totals.total_tokens == 5


def test_leaving_a_run_block_does_not_wait_for_a_hung_heartbeat(served: Served) -> None:
    seen = Seen()
    client = BudgetClient(served.target, timeout_s=0.2, backoff=FAST, interceptors=[Flaky(seen)])
    with client:
        block = client.run(THREAD, heartbeat_every_s=0.01)
        run = block.__enter__()
        seen.mode, seen.faults, seen.methods = "hold", 1, ("Heartbeat",)
        wait_until(lambda: len(seen.requests("Heartbeat")) > run.heartbeats, "a hung heartbeat")
        leaving = threading.Thread(target=block.__exit__, args=(None, None, None))
        leaving.start()
        leaving.join(timeout=30)  # a safety bound, not a measure: it ends after ~timeout_s
        assert not leaving.is_alive()
        assert not seen.release.is_set()  # the heartbeat is still hung
        assert run.totals is not None  # closed all the same
        seen.release.set()
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("budgetd-heartbeat")],
        "the heartbeat thread to end once its call returns",
    )


# --- a hung daemon -----------------------------------------------------------------------


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[str]:
    """A Unix socket that accepts connections and never says a word: every call ends in
    DEADLINE_EXCEEDED."""
    path = tmp_path / "hung.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        yield f"unix:{path}"


def test_a_hung_daemon_is_waited_for_once_then_calls_go_offline_at_once(hung: str) -> None:
    seen = Seen()
    client = BudgetClient(
        hung,
        on_unavailable="allow",
        timeout_s=0.05,
        retries=1,
        backoff=FAST,
        offline_recheck_s=3600,
        interceptors=[Flaky(seen)],
    )
    with client:
        assert client.consume(THREAD, Usage(1)).offline  # (retries + 1) deadlines
        assert len(seen.calls) == 2
        assert client.check(THREAD, Usage(1)).offline
        assert client.reserve(THREAD, Usage(1)).offline
        assert client.consume(THREAD, Usage(2)).offline
        with pytest.raises(BudgetdUnavailable, match="not sent") as raised:
            client.get_ledger("per-thread{thread=t1}")
        assert raised.value.attempts == 0
        assert len(seen.calls) == 2  # none of these was sent
        # One probe per interval: a single attempt, the others still go offline at once.
        clock = ManualClock(0)
        client._transport.breaker.clock = clock
        client._transport.breaker.unreachable()
        clock.advance(3600)
        assert client.consume(THREAD, Usage(3)).offline
        assert len(seen.calls) == 3  # the probe: the oldest buffered record, once
        assert client.consume(THREAD, Usage(4)).offline
        assert len(seen.calls) == 3
        assert client.buffered == 4


def test_failing_closed_a_hung_daemon_is_always_retried(hung: str) -> None:
    seen = Seen()
    client = BudgetClient(hung, timeout_s=0.05, retries=1, backoff=FAST, interceptors=[Flaky(seen)])
    with client:
        for _ in range(2):
            with pytest.raises(BudgetdUnavailable, match="DEADLINE_EXCEEDED"):
                client.check(THREAD, Usage(1))
        assert len(seen.calls) == 4


def test_the_breaker_lets_one_probe_through_per_interval() -> None:
    clock = ManualClock(0)
    breaker = Breaker(5, clock)
    assert breaker.gate() is Gate.closed
    breaker.unreachable()
    assert breaker.gate() is Gate.open
    clock.advance(5)
    assert breaker.gate() is Gate.probe
    assert breaker.gate() is Gate.open  # one probe at a time
    breaker.unreachable()  # the probe failed: another interval
    assert breaker.gate() is Gate.open
    clock.advance(5)
    assert breaker.gate() is Gate.probe
    breaker.answered()
    assert breaker.gate() is Gate.closed
    assert Breaker(0, clock).gate() is Gate.closed  # 0 turns it off
