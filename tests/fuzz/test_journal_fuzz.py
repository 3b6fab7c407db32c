"""Fuzz recovery: damaged journals and snapshots recover their valid prefix or stop typed.

Goal: whatever happened to the files of a state directory — a journal or a snapshot cut
short, bits flipped, garbage appended or written over, a frame whose checksum is right
but whose payload is no record — `recovery.recover` either rebuilds exactly the state
of an undamaged prefix (the state the pristine directory gives at that lsn: a damaged
record is never applied as if it were valid) or refuses with the documented
`StateDirError` naming the directory. Never another exception: the daemon turns that
one into exit code 2 and a message; anything else would be a traceback. The snapshot
reader alone (`snapshot.load`) answers a `Loaded` or `SnapshotCorrupt`; the event lease
an int or `StateDirError`.

Method: one real state directory, written once per module by the in-process server in
journal mode (mutations, a snapshot, more mutations, another snapshot, more: two
snapshots and journal segments after each). Each example copies it, damages one file,
and recovers. The reference states come from the pristine copy with its journal cut at
each record boundary (a prefix is a state the daemon really was in).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetd.core import Limits, default_price_table
from budgetd.persistence import lease, recovery, snapshot
from budgetd.persistence.frames import HEADER, frame, read_frames
from budgetd.persistence.statedir import StateDir, StateDirError
from budgetd.v1 import budget_pb2 as pb
from tests.fuzz.counts import COUNTS
from tests.fuzz.profile import fuzz
from tests.service.support import Served, serve

EXAMPLES = 300
LIMITS = Limits()
PRICES = default_price_table()


def _mutate(served: Served, tag: str, count: int) -> None:
    budget, admin = served.budget, served.admin
    for i in range(count):
        labels = {"agent": f"a{i % 3}", "thread": f"{tag}{i % 2}"}
        usage = pb.Usage(input_tokens=10 + i, output_tokens=i, model="gpt-4o")
        budget.Consume(pb.ConsumeRequest(request_id=f"{tag}-c{i}", labels=labels, usage=usage))
        held = budget.Reserve(
            pb.ReserveRequest(request_id=f"{tag}-r{i}", labels=labels, estimate=usage)
        )
        if i % 2:
            budget.Commit(
                pb.CommitRequest(
                    request_id=f"{tag}-k{i}", reservation_id=held.reservation_id, actual=usage
                )
            )
    budget.OpenRun(pb.OpenRunRequest(request_id=f"{tag}-o", run_id=f"{tag}-run", labels={}))
    admin.ResetLedger(pb.ResetLedgerRequest(request_id=f"{tag}-x", key="per-agent{agent=a0}"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("fuzz-journal")
    for served in serve(home):
        _mutate(served, "p", 6)
        served.admin.Snapshot(pb.SnapshotRequest())
        _mutate(served, "q", 6)
        served.admin.Snapshot(pb.SnapshotRequest())
        _mutate(served, "s", 6)
    state = home / "state"
    (state / "LOCK").unlink()
    return state


def _recover(path: Path) -> recovery.Recovered:
    state = StateDir(path)
    return recovery.recover(state, LIMITS, PRICES)


def _exported(found: recovery.Recovered) -> dict[str, Any]:
    assert found.engine is not None
    return found.engine.export_state()


class References:
    """The state at each lsn the pristine directory reaches: its journal cut at that
    record, recovered from the oldest snapshot (so every lsn it covers is reachable)."""

    def __init__(self, pristine: Path) -> None:
        self.pristine = pristine
        self.states: dict[int, dict[str, Any]] = {}

    def at(self, lsn: int) -> dict[str, Any]:
        if lsn not in self.states:
            with tempfile.TemporaryDirectory() as temp:
                copy = Path(temp) / "state"
                shutil.copytree(self.pristine, copy)
                self._cut(StateDir(copy), lsn)
                found = _recover(copy)
                assert found.lsn == lsn, (found.lsn, lsn)
                self.states[lsn] = _exported(found)
        return self.states[lsn]

    @staticmethod
    def _cut(state: StateDir, lsn: int) -> None:
        for _, path in state.snapshots()[1:]:
            path.unlink()  # the oldest snapshot alone
        for _, path in state.journals():
            payloads, _ = read_frames(path.read_bytes())
            kept = [p for p in payloads if json.loads(p)["lsn"] <= lsn]
            path.write_bytes(b"".join(frame(p) for p in kept))


@pytest.fixture(scope="module")
def references(pristine: Path) -> References:
    return References(pristine)


def test_the_pristine_directory_has_two_snapshots_and_journals(pristine: Path) -> None:
    state = StateDir(pristine)
    assert len(state.snapshots()) == 2 and len(state.journals()) >= 2
    found = _recover(pristine)
    assert found.replayed > 0 and not found.truncated


# --- damage -------------------------------------------------------------------------


def _damages(size: int) -> st.SearchStrategy[tuple[str, int, bytes]]:
    """(how, where, bytes) for a file of `size` bytes."""
    at = st.integers(0, max(size - 1, 0))
    garbage = st.binary(min_size=1, max_size=64)
    record_like = st.sampled_from(
        (b"{}", b'{"lsn":"x"}', b'{"lsn":1e999}', b"[]", b'{"op":"consume","lsn":null}',
         b'{"lsn":99999,"op":"consume","now":1,"args":{}}', b"\xff\xfe", b"null", b"{")
    )  # fmt: skip
    return st.one_of(
        st.tuples(st.just("truncate"), at, st.just(b"")),
        st.tuples(st.just("flip"), at, st.integers(0, 7).map(lambda bit: bytes([1 << bit]))),
        st.tuples(st.just("append"), st.just(size), garbage),
        st.tuples(st.just("overwrite"), at, garbage),
        st.tuples(st.just("append frame"), st.just(size), record_like),
        st.tuples(st.just("insert frame"), st.just(0), record_like),
    )


def _damaged(data: bytes, how: str, where: int, extra: bytes) -> bytes:
    if how == "truncate":
        return data[:where]
    if how == "flip":
        flipped = bytearray(data)
        if flipped:
            flipped[where] ^= extra[0]
        return bytes(flipped)
    if how == "append":
        return data + extra
    if how == "overwrite":
        return data[:where] + extra + data[where + len(extra) :]
    if how == "append frame":  # a checksum that is right, over a payload that is wrong
        return data + HEADER.pack(len(extra), zlib.crc32(extra)) + extra
    return HEADER.pack(len(extra), zlib.crc32(extra)) + extra + data


def _check_recovery(copy: Path, references: References, label: str) -> None:
    try:
        found = _recover(copy)
    except StateDirError as refused:
        COUNTS.record("journal recovery", f"{label}: StateDirError")
        assert str(copy) in str(refused)
        return
    COUNTS.record("journal recovery", f"{label}: recovered")
    assert _exported(found) == references.at(found.lsn), f"{label}: not a valid prefix"


@fuzz(EXAMPLES)
@given(data=st.data())
def _fuzz_recovery(pristine: Path, references: References, data: st.DataObject) -> None:
    files = sorted(p.name for p in pristine.iterdir() if p.suffix in (".log", ".snap"))
    name = data.draw(st.sampled_from(files), label="file")
    original = (pristine / name).read_bytes()
    how, where, extra = data.draw(_damages(len(original)), label="damage")
    with tempfile.TemporaryDirectory() as temp:
        copy = Path(temp) / "state"
        shutil.copytree(pristine, copy)
        (copy / name).write_bytes(_damaged(original, how, where, extra))
        kind = "snapshot" if name.endswith(".snap") else "journal"
        _check_recovery(copy, references, f"{kind} {how}")


def test_recovery_of_damaged_files_is_a_valid_prefix_or_a_state_dir_error(
    pristine: Path, references: References
) -> None:
    _fuzz_recovery(pristine, references)


HEADERS = (
    b'{"format":"budgetd.snapshot/1","lsn":1,"seq":0,"taken_at":0,"body":2}',
    b'{"format":"budgetd.snapshot/1","lsn":1e999,"seq":0,"taken_at":0}',
    b'{"format":"budgetd.snapshot/1","lsn":"x","seq":[],"taken_at":null}',
    b'{"format":"budgetd.snapshot/1"}', b'["budgetd.snapshot/1"]', b"7", b'"x"', b"{",
)  # fmt: skip
BODIES = (b"{}", b"[]", b'{"format":1}', b"null", b"\xff", b'{"ledgers":[[]]}')
SNAPSHOT_FRAMES = st.one_of(
    st.binary(max_size=64), st.sampled_from(HEADERS), st.sampled_from(BODIES)
)


@fuzz(EXAMPLES)
@given(
    data=st.one_of(st.just(b""), st.binary(max_size=64)),
    frames=st.one_of(
        st.lists(SNAPSHOT_FRAMES, max_size=3),
        st.tuples(st.sampled_from(HEADERS), st.sampled_from(BODIES)).map(list),
    ),
)
def _fuzz_snapshot_file(data: bytes, frames: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "snapshot-0000000000000001.snap"
        path.write_bytes(b"".join(frame(f) for f in frames) + data)
        try:
            snapshot.load(path)
        except snapshot.SnapshotCorrupt as corrupt:
            COUNTS.record("snapshot.load", "SnapshotCorrupt")
            assert corrupt.path == path and corrupt.reason
            return
        COUNTS.record("snapshot.load", "loaded")


def test_snapshot_load_reads_a_snapshot_or_says_it_is_corrupt() -> None:
    _fuzz_snapshot_file()


@fuzz(60)
@given(
    text=st.one_of(
        st.binary(max_size=40),
        st.integers().map(lambda n: f"{n}\n".encode()),
        st.sampled_from((b"", b" 7 ", b"1e3", b"\xff7", b"0x10", b"\x007", b"7\n8")),
    )
)
def _fuzz_lease(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as temp:
        state = StateDir(Path(temp))
        (Path(temp) / lease.LEASE_NAME).write_bytes(text)
        try:
            value = lease.read(state)
        except StateDirError:
            COUNTS.record("events.lease", "StateDirError")
            return
        COUNTS.record("events.lease", "read")
        assert isinstance(value, int)


def test_the_event_lease_reads_an_int_or_a_state_dir_error() -> None:
    _fuzz_lease()


# --- what the fuzzer found, kept as plain regressions ---------------------------------


def test_a_checksummed_frame_that_is_no_record_stops_the_start(pristine: Path) -> None:
    """Found by the fuzzer: `{}` in a valid frame at the end of a segment was a KeyError
    out of recover (a traceback instead of exit code 2)."""
    for payload in (b"{}", b"[]", b"not json", b'{"lsn":"7"}', b'{"lsn":true}'):
        with tempfile.TemporaryDirectory() as temp:
            copy = Path(temp) / "state"
            shutil.copytree(pristine, copy)
            _, newest = StateDir(copy).journals()[-1]
            newest.write_bytes(newest.read_bytes() + frame(payload))
            with pytest.raises(StateDirError, match="is not"):
                _recover(copy)


def test_a_snapshot_header_out_of_range_is_corrupt(tmp_path: Path) -> None:
    """Found by the fuzzer: an lsn of 1e999 (JSON's infinity) was an OverflowError, a
    header that is no object an AttributeError, out of snapshot.load."""
    body = frame(b"{}")
    for header in (HEADERS[1], HEADERS[2], HEADERS[4], HEADERS[5]):
        path = tmp_path / "snapshot-0000000000000001.snap"
        path.write_bytes(frame(header) + body)
        with pytest.raises(snapshot.SnapshotCorrupt):
            snapshot.load(path)


def test_a_snapshot_whose_state_does_not_load_stops_the_start(pristine: Path) -> None:
    """A snapshot with good checksums whose body is no engine state: StateDirError
    naming the snapshot (it was a KeyError), never a silent fallback."""
    with tempfile.TemporaryDirectory() as temp:
        copy = Path(temp) / "state"
        shutil.copytree(pristine, copy)
        _, newest = StateDir(copy).snapshots()[-1]
        payloads, _ = read_frames(newest.read_bytes())
        newest.write_bytes(frame(payloads[0]) + frame(b'{"format":"budgetd.state/1"}'))
        with pytest.raises(StateDirError, match=newest.name):
            _recover(copy)
