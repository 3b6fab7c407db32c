"""Coalescing (`coalesce=`) through the real in-process server: many callers, one stream.

Goal: callers of a coalescing client, many threads of a `BudgetClient` or many tasks of
an `AsyncBudgetClient`, get exactly what their unary calls would have given (their own
answer, the same typed exception with the same message, only in the caller concerned),
while their operations really travel together (the daemon carries out fewer batches
than there are operations); a daemon taking fewer operations per batch than the client
offers, a stream that breaks or stalls mid-flight, a full queue, a closing client and an
operation too large to batch change nothing a caller sees but what the SDK's retry
rules say: nothing acknowledged is lost and nothing is counted twice.

Method: `Carried` wraps the daemon's `Batches` (the in-process server's own code) to
count what it carried out and, while `hold()` is on, to keep its answers back: callers
then pile up in the client's queue (`coalescing_stats`), so coalescing is certain, not
likely, and a stream can be broken while batches are surely in flight. Every wait is for
a condition; the only durations are settings (a deadline the test makes short).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from budgetd.auth import tokens as token_table
from budgetd.auth.gate import Identities, anonymous_tcp
from budgetd.batch import Batches
from budgetd.core import Limits, Policy
from budgetd.runtime import Durability
from budgetd.v1 import budget_pb2 as pb
from budgetd_client import (
    AsyncBudgetClient,
    BudgetClient,
    BudgetdError,
    BudgetdUnavailable,
    BudgetExhausted,
    ClientClosed,
    Coalescing,
    CommitResult,
    ConsumeResult,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServerBusy,
    Usage,
)
from tests.auth_support import token_file
from tests.service.client_support import FAST, Daemon, ledger, wait_until
from tests.service.gated import serve_gated
from tests.service.support import Served

MODEL = "gpt-4o"


def labels(i: int | str) -> dict[str, str]:
    return {"agent": "a", "thread": f"t{i}"}


def thread_key(i: int | str) -> str:
    return f"per-thread{{thread=t{i}}}"


@dataclass
class Carried:
    """What the daemon's Batches carried out (both Batch and BatchStream go through
    `submit`), and a hold on their answers."""

    batches: list[list[str]] = field(default_factory=list)  # per batch: its operations' ids
    refused: int = 0
    held: int = 0  # answers waiting for release() now
    _holding: threading.Event = field(default_factory=threading.Event)

    @property
    def operations(self) -> int:
        return sum(len(batch) for batch in self.batches)

    def hold(self) -> None:
        self._holding.set()

    def release(self) -> None:
        self._holding.clear()

    async def wait_while_held(self) -> None:
        if not self._holding.is_set():
            return
        self.held += 1
        try:
            while self._holding.is_set():  # polled on the server's loop: a test aid only
                await asyncio.sleep(0.002)
        finally:
            self.held -= 1


@pytest.fixture
def carried(monkeypatch: pytest.MonkeyPatch) -> Carried:
    record = Carried()
    submit, answer = Batches.submit, Batches.answer

    def counted(self: Batches, batch: pb.BatchRequest) -> Any:
        try:
            entries = submit(self, batch)
        except Exception:
            record.refused += 1
            raise
        record.batches.append([_id_of(op) for op in batch.operations])
        return entries

    async def held(self: Batches, entries: Any) -> Any:
        await record.wait_while_held()
        return await answer(self, entries)

    monkeypatch.setattr(Batches, "submit", counted)
    monkeypatch.setattr(Batches, "answer", held)
    return record


def _id_of(operation: pb.BatchOperation) -> str:
    kind = operation.WhichOneof("operation")
    request = getattr(operation, kind or "check")
    return str(getattr(request, "request_id", "") or kind)


def coalescing(target: str, **options: Any) -> BudgetClient:
    options.setdefault("coalesce", True)
    return BudgetClient(target, backoff=FAST, **options)


def sent_or_queued(client: BudgetClient | AsyncBudgetClient, count: int) -> Callable[[], bool]:
    """Every one of `count` first operations is on the stream or in the queue."""

    def check() -> bool:
        stats = client.coalescing_stats
        assert stats is not None
        return stats.operations + stats.queued >= count

    return check


class Agents:
    """Callers in threads: `run(i)` for each i, their results or exceptions by i."""

    def __init__(self, count: int, run: Callable[[int], Any]) -> None:
        self.results: dict[int, Any] = {}
        self.errors: dict[int, BaseException] = {}
        self._threads = [
            threading.Thread(target=self._one, args=(i, run), daemon=True) for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _one(self, i: int, run: Callable[[int], Any]) -> None:
        try:
            self.results[i] = run(i)
        except BaseException as error:  # handed to the test, which asserts on it
            self.errors[i] = error

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "a caller hangs"


# --- many callers, their own answers ------------------------------------------------------


def test_threads_get_their_own_answers_and_the_ledgers_add_up(
    served: Served, carried: Carried
) -> None:
    callers, rounds = 24, 4

    def agent(i: int) -> tuple[list[CommitResult | ConsumeResult], Any]:
        mine: list[CommitResult | ConsumeResult] = []
        for _ in range(rounds):
            with budget.reserve(labels(i), Usage(50 * (i + 1), model=MODEL)) as held:
                mine.append(held.commit(Usage(i + 1, model=MODEL)))
            mine.append(budget.consume(labels(i), Usage(100 * (i + 1), model=MODEL)))
        return mine, budget.check(labels(i), Usage(1, model=MODEL))

    with coalescing(served.target) as budget, BudgetClient(served.target) as unary:
        carried.hold()
        agents = Agents(callers, agent)
        wait_until(sent_or_queued(budget, callers), "every caller's first reserve to be in")
        carried.release()
        agents.join()
        assert not agents.errors
        for i in range(callers):
            mine, check = agents.results[i]
            expected = rounds * 101 * (i + 1)
            assert ledger(served, thread_key(i)).totals.input_tokens == expected
            assert all(thread_key(i) in [b.key for b in r.ledgers] for r in mine)
            (own,) = [s for s in check.ledgers if s.key == thread_key(i)]
            assert own.totals.input_tokens == expected  # its own view, after its own calls
            # The same question asked again, coalesced and unary: the same answer.
            assert budget.check(labels(i), Usage(1, model=MODEL)) == unary.check(
                labels(i), Usage(1, model=MODEL)
            )
    operations = callers * (rounds * 3 + 1) + callers
    assert carried.operations == operations
    assert len(carried.batches) < operations
    assert max(len(batch) for batch in carried.batches) > 1


def test_tasks_get_their_own_answers_and_the_ledgers_add_up(
    served: Served, carried: Carried
) -> None:
    callers, rounds = 32, 4

    async def scenario() -> None:
        async with AsyncBudgetClient(served.target, backoff=FAST, coalesce=True) as budget:

            async def agent(i: int) -> list[ConsumeResult]:
                return [
                    await budget.consume(labels(i), Usage(10 * (i + 1), model=MODEL))
                    for _ in range(rounds)
                ]

            carried.hold()
            tasks = [asyncio.create_task(agent(i)) for i in range(callers)]
            await until(sent_or_queued(budget, callers), "every task's first consume")
            carried.release()
            results = await asyncio.gather(*tasks)
            for i, mine in enumerate(results):
                assert all(thread_key(i) in [b.key for b in r.ledgers] for r in mine)
                assert all(not r.replayed and r.cost_known for r in mine)

    asyncio.run(scenario())
    for i in range(callers):
        assert ledger(served, thread_key(i)).totals.input_tokens == rounds * 10 * (i + 1)
    assert carried.operations == callers * rounds
    assert len(carried.batches) < callers * rounds


async def until(condition: Callable[[], bool], what: str, tries: int = 6000) -> None:
    """Poll with a bound, yielding to the loop (no timed assertion)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def test_a_lone_caller_never_waits_for_a_window(served: Served, carried: Carried) -> None:
    """A window of a whole second against a deadline of half of one, no retries: a lone
    call that waited for others would fail with BudgetdUnavailable."""
    options = Coalescing(window_us=1_000_000)
    with coalescing(served.target, coalesce=options, timeout_s=0.5, retries=0) as budget:
        for n in range(5):
            budget.consume(labels(0), Usage(1, model=MODEL))
            assert budget.check(labels(0), Usage(1)).ledgers
            stats = budget.coalescing_stats
            assert stats is not None and stats.batches == 2 * (n + 1)
    assert [len(batch) for batch in carried.batches] == [1] * 10


# --- errors, each in its own caller -------------------------------------------------------


def failing_calls(budget: BudgetClient) -> dict[str, Callable[[], Any]]:
    """Calls that fail on the daemon's side, each its own way, with fixed request_ids."""
    return {
        "unknown reservation": lambda: budget.commit("no-such", Usage(1), request_id="c-x"),
        "bad label key": lambda: budget.consume({"Bad Key": "x"}, Usage(1), request_id="bad-1"),
        "too many tokens": lambda: budget.consume(
            labels("big"), Usage(10**13, model=MODEL), request_id="big-1"
        ),
        "over the cap": lambda: budget.reserve(labels("cap"), Usage(10**9), request_id="cap-1"),
    }


EXPECTED = {
    "unknown reservation": NotFound,
    "bad label key": InvalidRequest,
    "too many tokens": InvalidRequest,
    "over the cap": BudgetExhausted,
}


# With a batch held in flight, a window of a second keeps what follows in the queue
# until the answer comes: then it all goes in one batch.
TOGETHER = Coalescing(window_us=1_000_000)


def test_an_error_is_raised_in_its_own_caller_only_as_its_unary_call_raises_it(
    served: Served, carried: Carried
) -> None:
    with coalescing(served.target, coalesce=TOGETHER) as budget:
        carried.hold()
        first = Agents(1, lambda i: budget.consume(labels("first"), Usage(1, model=MODEL)))
        wait_until(lambda: carried.held == 1, "the first batch to be held")
        calls = list(failing_calls(budget).values())
        good = 6

        def caller(i: int) -> Any:
            if i < len(calls):
                return calls[i]()
            return budget.consume(labels(i), Usage(7, model=MODEL), request_id=f"good-{i}")

        agents = Agents(len(calls) + good, caller)
        wait_until(sent_or_queued(budget, 1 + len(calls) + good), "every caller's operation")
        carried.release()
        first.join()
        agents.join()
    (batch,) = [b for b in carried.batches if "c-x" in b]
    assert len(batch) > 1  # the failing ones travelled with the others
    with BudgetClient(served.target) as unary:
        for i, (name, call) in enumerate(failing_calls(unary).items()):
            with pytest.raises(BudgetdError) as raised:
                call()
            got = agents.errors[i]
            assert type(got) is EXPECTED[name] is type(raised.value), name
            assert str(got) == str(raised.value), name
            assert isinstance(got, BudgetdError) and got.code == raised.value.code
            assert got.request_id == raised.value.request_id is not None
    assert sorted(agents.results) == list(range(len(calls), len(calls) + good))
    for i in agents.results:
        assert ledger(served, thread_key(i)).totals.input_tokens == 7


def test_a_scoped_callers_operation_outside_its_scope_fails_alone(
    tmp_path: Path, carried: Carried
) -> None:
    tokens = token_file(
        tmp_path / "tokens.toml",
        {"name": "acme", "token": "tok-acme", "role": "agent", "scope": {"tenant": "acme"}},
    )
    identities = Identities(
        anonymous=anonymous_tcp(None), tokens=token_table.load([tokens], None, Limits())
    )
    per_tenant = Policy.from_mapping(
        {"name": "per-tenant", "per": ["tenant"], "caps": {"total_tokens": 10**9}}
    )
    for gated in serve_gated(identities, policies=(per_tenant,)):

        def spend(budget: BudgetClient, tenant: str, rid: str) -> ConsumeResult:
            return budget.consume({"tenant": tenant}, Usage(5, model=MODEL), request_id=rid)

        with coalescing(gated.target, token="tok-acme", coalesce=TOGETHER) as budget:
            carried.hold()
            first = Agents(1, lambda _: spend(budget, "acme", "first"))
            wait_until(lambda: carried.held == 1, "the first batch to be held")
            agents = Agents(4, lambda i: spend(budget, "beta" if i == 0 else "acme", f"s-{i}"))
            wait_until(sent_or_queued(budget, 5), "every caller's operation")
            carried.release()
            first.join()
            agents.join()
        with (
            BudgetClient(gated.target, token="tok-acme") as unary,
            pytest.raises(PermissionDenied) as raised,
        ):
            spend(unary, "beta", "s-0")
        assert set(agents.errors) == {0}
        denied = agents.errors[0]
        assert isinstance(denied, PermissionDenied) and str(denied) == str(raised.value)
        assert "operations[" not in str(denied)
        assert denied.request_id == "s-0"
        assert not first.errors
        (batch,) = [b for b in carried.batches if "s-0" in b]
        assert len(batch) > 1


# --- the daemon's bounds ------------------------------------------------------------------


def test_a_daemon_taking_fewer_operations_per_batch_is_followed_silently(
    served: Served, carried: Carried
) -> None:
    def lower() -> None:
        served.runtime.max_batch_operations = 2

    served.in_loop(lower)
    callers = 16
    options = Coalescing(window_us=TOGETHER.window_us, max_operations=64)
    with coalescing(served.target, coalesce=options) as budget:
        carried.hold()
        agents = Agents(callers, lambda i: budget.consume(labels(i), Usage(i + 1, model=MODEL)))
        wait_until(sent_or_queued(budget, callers), "every caller's consume")
        carried.release()
        agents.join()
        stats = budget.coalescing_stats
        assert stats is not None and stats.max_operations == 2
    assert not agents.errors
    assert carried.refused >= 1
    assert max(len(batch) for batch in carried.batches) == 2
    for i in range(callers):
        assert ledger(served, thread_key(i)).totals.input_tokens == i + 1


def test_an_operation_too_large_to_batch_is_its_own_call(served: Served, carried: Carried) -> None:
    huge = Usage(1, model="m" * 70_000)  # over the contract's 64 KiB in any message
    with coalescing(served.target) as coalesced, BudgetClient(served.target) as unary:
        with pytest.raises(ServerBusy) as batched:
            coalesced.consume(labels(0), huge, request_id="huge-1")
        with pytest.raises(ServerBusy) as alone:
            unary.consume(labels(0), huge, request_id="huge-1")
        assert batched.value.code == alone.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert batched.value.request_id == "huge-1"
        stats = coalesced.coalescing_stats
        assert stats is not None and stats.streams == 0
        coalesced.consume(labels(0), Usage(3, model=MODEL))  # the next one is batched
    assert carried.operations == 1


def test_when_the_daemon_refuses_the_stream_calls_go_unary(
    served: Served, carried: Carried
) -> None:
    def fill() -> None:
        served.runtime.streams = served.runtime.max_streams

    served.in_loop(fill)
    with coalescing(served.target) as budget:
        result = budget.consume(labels(0), Usage(9, model=MODEL), request_id="refused-1")
        assert not result.replayed and not result.offline
        assert budget.consume(labels(0), Usage(9, model=MODEL)).cost_known
        stats = budget.coalescing_stats
        assert stats is not None and stats.streams == 1  # tried once, then unary for a while
    assert carried.operations == 0
    assert ledger(served, thread_key(0)).totals.input_tokens == 18


def test_a_full_queue_holds_callers_back_until_there_is_room(
    served: Served, carried: Carried
) -> None:
    options = Coalescing(max_operations=2, max_pending=2)
    callers = 8
    with coalescing(served.target, coalesce=options) as budget:
        carried.hold()
        agents = Agents(callers, lambda i: budget.consume(labels(i), Usage(i + 1, model=MODEL)))

        def held_back() -> bool:
            stats = budget.coalescing_stats
            assert stats is not None
            return stats.waiting == callers - 2 and carried.operations == 2

        wait_until(held_back, "two operations in flight, the other callers waiting for room")
        stats = budget.coalescing_stats
        assert stats is not None and stats.queued == 0
        carried.release()
        agents.join()
    assert not agents.errors
    for i in range(callers):
        assert ledger(served, thread_key(i)).totals.input_tokens == i + 1


# --- broken and stuck streams -------------------------------------------------------------


def answered(call: Callable[[], Any]) -> bool:
    try:
        call()
    except BudgetdUnavailable:
        return False
    return True


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path, Durability.JOURNAL)  # it remembers request_ids across restarts
    yield daemon
    daemon.stop()


def test_a_restart_mid_flight_loses_nothing_and_counts_nothing_twice(
    daemon: Daemon, carried: Carried
) -> None:
    served = daemon.start()
    callers = 12
    with coalescing(daemon.target, retries=2000) as budget:
        budget.consume(labels("warm"), Usage(1, model=MODEL))
        carried.hold()
        agents = Agents(callers, lambda i: budget.consume(labels(i), Usage(i + 1, model=MODEL)))
        wait_until(sent_or_queued(budget, callers + 1), "every caller's consume")
        wait_until(lambda: carried.held >= 1, "a batch in flight, held")
        applied = carried.operations
        daemon.stop()  # the stream breaks with batches applied and unanswered
        carried.release()
        served = daemon.start()
        agents.join()
        stats = budget.coalescing_stats
        assert stats is not None and stats.streams >= 2
    assert not agents.errors
    assert applied > 1
    for i in range(callers):
        assert ledger(served, thread_key(i)).totals.input_tokens == i + 1
    assert any(r.replayed for r in agents.results.values())  # answered from the journal


def test_without_retries_a_broken_stream_raises_and_the_request_id_retries_safely(
    daemon: Daemon, carried: Carried
) -> None:
    served = daemon.start()
    callers = 6
    with coalescing(daemon.target, retries=0) as budget:
        carried.hold()
        agents = Agents(callers, lambda i: budget.consume(labels(i), Usage(i + 1, model=MODEL)))
        wait_until(sent_or_queued(budget, callers), "every caller's consume")
        wait_until(lambda: carried.held >= 1, "a batch in flight, held")
        daemon.stop()
        agents.join()
        carried.release()
        assert sorted(agents.errors) == list(range(callers))
        assert all(isinstance(e, BudgetdUnavailable) for e in agents.errors.values())
        served = daemon.start()
        for i, error in agents.errors.items():
            assert isinstance(error, BudgetdUnavailable) and error.request_id
            retry = functools.partial(
                budget.consume, labels(i), Usage(i + 1, model=MODEL), request_id=error.request_id
            )
            # Retried as often as it takes the channel to reconnect: the same id each time.
            wait_until(functools.partial(answered, retry), "the retry to be answered")
    for i in range(callers):  # once each, whether the first attempt had got through or not
        assert ledger(served, thread_key(i)).totals.input_tokens == i + 1


def test_a_stuck_stream_is_cancelled_and_its_calls_retried_on_a_new_one(
    served: Served, carried: Carried
) -> None:
    callers = 8
    with coalescing(served.target, timeout_s=0.5, retries=100) as budget:
        carried.hold()  # the daemon takes the operations and never answers
        agents = Agents(callers, lambda i: budget.consume(labels(i), Usage(i + 1, model=MODEL)))

        def reopened() -> bool:
            stats = budget.coalescing_stats
            return stats is not None and stats.streams >= 2

        wait_until(reopened, "the stuck stream to be given up and a new one opened")
        carried.release()
        agents.join()
    assert not agents.errors
    assert carried.operations > callers  # sent again after the deadline...
    for i in range(callers):  # ...and counted once
        assert ledger(served, thread_key(i)).totals.input_tokens == i + 1


def test_failing_open_a_coalesced_consume_is_buffered_and_delivered_later(
    daemon: Daemon,
) -> None:
    served = daemon.start()
    with coalescing(daemon.target, on_unavailable="allow", retries=1) as budget:
        budget.consume(labels(0), Usage(1, model=MODEL))
        daemon.stop()
        offline = budget.consume(labels(0), Usage(2, model=MODEL))
        assert offline.offline and budget.buffered == 1
        served = daemon.start()
        wait_until(lambda: budget.flush() == 0, "the buffered consume to be delivered")
    assert ledger(served, thread_key(0)).totals.input_tokens == 3


# --- closing ------------------------------------------------------------------------------


def test_close_answers_the_calls_in_flight_then_refuses_new_ones(
    served: Served, carried: Carried
) -> None:
    callers = 6
    budget = coalescing(served.target)
    carried.hold()
    agents = Agents(callers, lambda i: budget.consume(labels(i), Usage(i + 1, model=MODEL)))
    wait_until(sent_or_queued(budget, callers), "every caller's consume")
    closing = threading.Thread(target=budget.close)
    closing.start()
    wait_until(lambda: budget.closed, "close() to begin")
    carried.release()
    agents.join()
    closing.join(timeout=60)
    assert not closing.is_alive()
    assert not agents.errors
    with pytest.raises(ClientClosed):
        budget.consume(labels(0), Usage(1))
    wait_until(lambda: served.in_loop(lambda: served.runtime.streams) == 0, "the stream to end")


# --- asyncio: errors, a stuck stream, a cancelled task ------------------------------------


def test_tasks_get_their_own_errors(served: Served, carried: Carried) -> None:
    async def scenario() -> None:
        async with AsyncBudgetClient(served.target, backoff=FAST, coalesce=TOGETHER) as budget:
            carried.hold()
            first = asyncio.create_task(budget.consume(labels("first"), Usage(1, model=MODEL)))
            await until(lambda: carried.held == 1, "the first batch to be held")
            missing = asyncio.create_task(budget.commit("no-such", Usage(1), request_id="c-y"))
            bad = asyncio.create_task(budget.consume({"Bad Key": "x"}, Usage(1)))
            good = [
                asyncio.create_task(budget.consume(labels(i), Usage(3, model=MODEL)))
                for i in range(4)
            ]
            await until(sent_or_queued(budget, 7), "every task's operation")
            carried.release()
            await first
            with pytest.raises(NotFound) as not_found:
                await missing
            assert not_found.value.request_id == "c-y"
            assert str(not_found.value).startswith("reservation 'no-such'")
            with pytest.raises(InvalidRequest) as invalid:
                await bad
            assert "operations[" not in str(invalid.value)
            for task in good:
                assert (await task).cost_known

    asyncio.run(scenario())
    (batch,) = [b for b in carried.batches if "c-y" in b]
    assert len(batch) > 1


def test_tasks_retry_on_a_new_stream_when_one_is_stuck(served: Served, carried: Carried) -> None:
    callers = 8

    async def scenario() -> None:
        async with AsyncBudgetClient(
            served.target, backoff=FAST, coalesce=True, timeout_s=0.5, retries=100
        ) as budget:
            carried.hold()
            tasks = [
                asyncio.create_task(budget.consume(labels(i), Usage(i + 1, model=MODEL)))
                for i in range(callers)
            ]

            def reopened() -> bool:
                stats = budget.coalescing_stats
                return stats is not None and stats.streams >= 2

            await until(reopened, "the stuck stream to be given up and a new one opened")
            carried.release()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())
    for i in range(callers):
        assert ledger(served, thread_key(i)).totals.input_tokens == i + 1


def test_a_cancelled_task_withdraws_its_queued_operation(served: Served, carried: Carried) -> None:
    """With a batch in flight, the second consume waits in the queue (`TOGETHER`); its
    task cancelled, it is never sent."""
    options = TOGETHER

    async def scenario() -> None:
        async with AsyncBudgetClient(served.target, backoff=FAST, coalesce=options) as budget:
            assert budget.coalescing == options
            carried.hold()
            first = asyncio.create_task(budget.consume(labels("first"), Usage(1, model=MODEL)))
            await until(lambda: carried.held == 1, "the first batch to be held")
            queued = asyncio.create_task(
                budget.consume(labels("gone"), Usage(5, model=MODEL), request_id="gone-1")
            )
            await until(sent_or_queued(budget, 2), "the second consume, queued")
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            stats = budget.coalescing_stats
            assert stats is not None and stats.queued == 0 and stats.operations == 1
            carried.release()
            await first

    asyncio.run(scenario())
    assert all("gone-1" not in batch for batch in carried.batches)
