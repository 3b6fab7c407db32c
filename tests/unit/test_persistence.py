"""Frames, the journal and recovery on real files in a temp directory.

Goal: a frame reader never accepts a damaged frame and tells a torn tail from damage
with good frames after it; the journal groups concurrent appends into one fsync,
numbers records consecutively, starts segments where asked and deletes only what a
snapshot covers; recovery replays exactly the records after the snapshot, once, and
refuses a hole; a state an earlier release wrote is replayed under its rules and said
to be of an earlier form (the start then writes it anew). Method: the real classes on
tmp_path, an asyncio loop per test.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import cast

import pytest

from budgetd.core import Engine, Usage, default_policies
from budgetd.core.mutations import Mutation
from budgetd.persistence import recovery, snapshot
from budgetd.persistence.frames import frame, frame_follows, read_frames
from budgetd.persistence.journal import Entry, Journal, encode_entry
from budgetd.persistence.statedir import StateDir, StateDirError

T0 = 1_800_000_000.0
LABELS = {"agent": "a", "thread": "t1"}


def consume(i: int) -> Mutation:
    return Mutation(
        "consume",
        T0 + i,
        {"labels": LABELS, "usage": Usage(input_tokens=10), "request_id": f"r{i}", "run_id": ""},
    )


def test_frames_round_trip_and_every_kind_of_damage_is_found() -> None:
    data = b"".join(frame(json.dumps({"n": n}).encode()) for n in range(3))
    payloads, damage = read_frames(data)
    assert [json.loads(p)["n"] for p in payloads] == [0, 1, 2] and damage is None
    short = read_frames(data[:-3])
    assert len(short[0]) == 2 and short[1] is not None and "runs past the end" in short[1].reason
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    payloads, damage = read_frames(bytes(flipped))
    assert damage is not None and damage.reason == "checksum mismatch"
    assert frame_follows(bytes(flipped), damage.offset)  # corruption, not a torn tail
    assert not frame_follows(data[:-3], short[1].offset)  # a torn tail
    assert read_frames(data + b"\0" * 5)[1] is not None  # a header cut short


def test_the_state_directory_is_private_and_locked(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.open()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    with pytest.raises(StateDirError, match="in use by another budgetd"):
        StateDir(tmp_path / "state").open()
    state.close()
    StateDir(tmp_path / "state").open()  # released with the descriptor
    (tmp_path / "file").write_text("")
    with pytest.raises(StateDirError, match="not a directory"):
        StateDir(tmp_path / "file").open()


def run_journal(tmp_path: Path, batches: list[int], rotate_after: int | None = None) -> StateDir:
    """Append `batches` of consume records (all of a batch before the writer runs)."""
    state = StateDir(tmp_path / "state")
    state.open()
    durable: list[int] = []

    async def scenario() -> None:
        journal = Journal(state, 1, lambda batch: durable.extend(e.lsn for e in batch), print)
        journal.start()
        lsn = 0
        for size in batches:
            futures = []
            for _ in range(size):
                lsn += 1
                futures.append(journal.append(consume(lsn), []))
                if lsn == rotate_after:
                    journal.rotate()
            await asyncio.gather(*futures)
        assert journal.stats.fsyncs >= len(batches)
        await journal.close()

    asyncio.run(scenario())
    assert durable == list(range(1, sum(batches) + 1))  # in order, each once
    return state


def test_one_fsync_serves_a_whole_batch_and_segments_start_where_asked(tmp_path: Path) -> None:
    state = run_journal(tmp_path, [1, 50, 3], rotate_after=20)
    segments = state.journals()
    assert [first for first, _ in segments] == [1, 21]
    lsns = []
    for _, path in segments:
        payloads, damage = read_frames(path.read_bytes())
        assert damage is None
        lsns += [json.loads(p)["lsn"] for p in payloads]
    assert lsns == list(range(1, 55))


def test_recovery_replays_what_follows_the_snapshot_once_and_refuses_a_hole(
    tmp_path: Path,
) -> None:
    state = run_journal(tmp_path, [10, 10], rotate_after=10)
    engine = Engine(default_policies())
    for i in range(1, 6):  # the snapshot covers records 1..5
        engine.apply(consume(i))
    snapshot.write(state, engine, 5, 0, T0)
    recovered = recovery.recover(state, engine.limits, engine.prices)
    assert (recovered.lsn, recovered.replayed) == (20, 15)
    assert recovered.engine is not None
    assert recovered.engine.get_ledger("per-thread{thread=t1}", T0 + 30).totals.input_tokens == 200
    (state.path / f"journal-{1:016d}.log").unlink()  # records 6..10 are gone
    with pytest.raises(StateDirError, match=r"records 6\.\.10 are missing"):
        recovery.recover(state, engine.limits, engine.prices)


def test_dropping_keeps_every_record_a_snapshot_does_not_cover(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.open()

    async def scenario() -> list[int]:
        journal = Journal(state, 1, lambda batch: None, print)
        journal.start()
        for i in range(1, 11):
            await journal.append(consume(i), [])
            if i in (4, 8):
                journal.rotate()
        await journal.drop_through(4)
        kept = [first for first, _ in state.journals()]
        await journal.drop_through(10)
        await journal.append(consume(11), [])  # a new segment after everything was dropped
        await journal.close()
        return kept + [first for first, _ in state.journals()]

    assert asyncio.run(scenario()) == [5, 9, 11]


def test_a_record_written_twice_after_a_write_error_is_applied_once(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.open()
    snapshot.write(state, Engine(default_policies()), 0, 0, T0)
    first = b"".join(encode_entry(Entry(i, consume(i), [])) for i in (1, 2))
    (state.path / f"journal-{1:016d}.log").write_bytes(first + b"\x00\x00\x00")  # torn
    again = b"".join(encode_entry(Entry(i, consume(i), [])) for i in (2, 3))
    (state.path / f"journal-{2:016d}.log").write_bytes(again)  # rewritten from lsn 2
    recovered = recovery.recover(state, Engine().limits, Engine().prices)
    assert (recovered.lsn, recovered.replayed, recovered.truncated) == (3, 3, True)
    assert recovered.engine is not None
    assert recovered.engine.get_ledger("per-thread{thread=t1}", T0 + 9).totals.input_tokens == 30


class _EarlierForm:
    """What snapshot.write reads of an engine: its state, in an earlier release's form."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def export_state(self) -> dict[str, object]:
        return {**self.engine.export_state(), "format": "budgetd.state/2"}


def earlier_state_dir(path: Path) -> tuple[StateDir, Engine]:
    """A state directory (open) as an earlier release left it: a snapshot of the empty
    state in that release's form, and one Consume journaled after it (record 1)."""
    state = StateDir(path)
    state.open()
    engine = Engine(default_policies())
    snapshot.write(state, cast(Engine, _EarlierForm(engine)), 0, 0, T0)
    (state.path / f"journal-{1:016d}.log").write_bytes(encode_entry(Entry(1, consume(1), [])))
    return state, engine


def test_a_state_of_an_earlier_form_is_replayed_under_its_rules_then_this_releases(
    tmp_path: Path,
) -> None:
    state, engine = earlier_state_dir(tmp_path / "state")
    recovered = recovery.recover(state, engine.limits, engine.prices)
    assert recovered.earlier_form and recovered.replayed == 1
    assert recovered.engine is not None
    assert not recovered.engine.shares.earlier_release  # what comes next is this release's
    snapshot.write(state, recovered.engine, 1, 0, T0)
    assert not recovery.recover(state, engine.limits, engine.prices).earlier_form
