"""A state directory an earlier release wrote, started through the daemon's start-up.

Goal: the start writes such a state anew, in this release's form, before it serves, so
no record this release journals ever follows a snapshot of the earlier form (whose
journal is replayed under that release's rules); what the directory held is all there.
Method: a snapshot of the earlier form and a journal record after it, written by hand
into the state directory, then a real in-process grpc.aio server started on it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from budgetd.core import Engine, default_policies
from budgetd.core.state import FORMAT
from budgetd.persistence import snapshot
from budgetd.persistence.journal import Entry, encode_entry
from budgetd.persistence.statedir import StateDir
from budgetd.v1 import budget_pb2 as pb
from tests.service.support import serve
from tests.unit.test_persistence import T0, _EarlierForm, consume


def test_a_state_of_an_earlier_form_is_written_anew_before_the_daemon_serves(
    tmp_path: Path,
) -> None:
    state = StateDir(tmp_path / "state")
    state.open()
    snapshot.write(state, _EarlierForm(Engine(default_policies())), 0, 0, T0)  # type: ignore[arg-type]
    (state.path / f"journal-{1:016d}.log").write_bytes(encode_entry(Entry(1, consume(1), [])))
    state.close()
    with contextlib.contextmanager(serve)(tmp_path) as served:
        lsn, newest = StateDir(tmp_path / "state").snapshots()[-1]
        assert lsn == 1  # covers the replayed record
        assert snapshot.load(newest).state["format"] == FORMAT
        answer = served.budget.GetLedger(pb.GetLedgerRequest(key="per-thread{thread=t1}"))
        assert answer.ledger.totals.input_tokens == 10
