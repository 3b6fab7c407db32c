"""A state directory an earlier release wrote, started through the daemon's start-up.

Goal: the start writes such a state anew, in this release's form, before it serves, so
no record this release journals ever follows a snapshot of the earlier form (whose
journal is replayed under that release's rules); what the directory held is all there;
calls are refused until it is written, and a rewrite that fails refuses the start with
the directory named. Method: a snapshot of the earlier form and a journal record after
it, written by hand into the state directory, then a real in-process grpc.aio server
started on it (or the start-up path alone, a caller trying all along).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from budgetd import startup
from budgetd.core import Usage, default_policies
from budgetd.core.state import FORMAT
from budgetd.errors import Unavailable
from budgetd.event_log import EventLog
from budgetd.persistence import snapshot
from budgetd.persistence.statedir import StateDir, StateDirError
from budgetd.runtime import STARTING, Durability, Runtime
from budgetd.v1 import budget_pb2 as pb
from tests.service.support import serve
from tests.unit.test_persistence import LABELS, earlier_state_dir


def test_a_state_of_an_earlier_form_is_written_anew_before_the_daemon_serves(
    tmp_path: Path,
) -> None:
    state, _ = earlier_state_dir(tmp_path / "state")
    state.close()
    with contextlib.contextmanager(serve)(tmp_path) as served:
        lsn, newest = StateDir(tmp_path / "state").snapshots()[-1]
        assert lsn == 1  # covers the replayed record
        assert snapshot.load(newest).state["format"] == FORMAT
        answer = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}"))
        assert answer.ledger.totals.input_tokens == 10


def test_a_start_whose_rewrite_fails_is_refused_and_serves_nothing_meanwhile(
    tmp_path: Path,
) -> None:
    state, engine = earlier_state_dir(tmp_path / "state")
    # Where the rewrite goes (covering record 1: nothing to compact, so nothing else is
    # journaled first): a directory in its place makes the write fail for real.
    (state.path / f"snapshot-{1:016d}.snap").mkdir()
    runtime = Runtime(engine, EventLog(100, 1, 100, 0, 1.0), mode=Durability.JOURNAL)
    runtime.refusing = STARTING
    usage = {"labels": LABELS, "usage": Usage(input_tokens=7), "run_id": ""}

    async def scenario() -> tuple[int, int]:
        restoring = asyncio.create_task(
            startup.restore(
                runtime,
                state,
                default_policies(),
                engine.limits,
                engine.prices,
                lambda seq: EventLog(100, 1, 100, seq, 1.0),
                lambda problem: None,
            )
        )
        tried = served = 0
        while not restoring.done():  # a caller trying all along the start
            tried += 1
            with contextlib.suppress(Unavailable):
                await runtime.apply("consume", {**usage, "request_id": f"during-{tried}"})
                served += 1
            await asyncio.sleep(0)
        with pytest.raises(StateDirError, match="snapshot failed"):
            await restoring
        assert runtime.store is not None and runtime.store.journal is not None
        await runtime.store.journal.close()
        return tried, served

    tried, served = asyncio.run(scenario())
    assert tried > 0 and served == 0
    assert runtime.refusing == STARTING
