"""Start-up: the newest valid snapshot, then every journal record after it.

What is found is said in the log: which snapshot, how many records replayed, a torn
tail cut (a warning: the crash interrupted a write that was never acknowledged), a
corrupt snapshot skipped for the one before (an error: it should not happen). Damage
that would lose acknowledged records silently — a bad record followed by good ones, a
hole in the lsn sequence, no usable snapshot although some exist — stops the start
with the path and the reason; the operator decides (restore a backup, or move the
files aside).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from budgetd.core import Engine, Limits, PriceTable
from budgetd.core import events as ev
from budgetd.core.mutations import decode
from budgetd.core.shares import DEFAULT_MAX_SLICE_FRACTION
from budgetd.core.state import FORMAT
from budgetd.logs import fields
from budgetd.persistence import snapshot
from budgetd.persistence.frames import frame_follows, read_frames
from budgetd.persistence.statedir import StateDir, StateDirError

log = logging.getLogger("budgetd.recovery")


@dataclass(frozen=True, slots=True)
class Recovered:
    engine: Engine | None  # None: a fresh state directory
    lsn: int  # the last record applied
    snapshot_lsn: int  # the record the loaded snapshot covers
    snapshot_seq: int  # the last event seq the snapshot accounts for
    events: list[ev.Event]  # what replaying the journal regenerated, in order
    snapshot: Path | None
    replayed: int
    truncated: bool
    # The snapshot was of an earlier release's form: written anew at once, so no record
    # of this release follows it (its journal was replayed under that release's rules).
    earlier_form: bool = False


def recover(
    state: StateDir,
    limits: Limits,
    prices: PriceTable,
    *,
    global_enabled: bool = False,
    max_slice_fraction: float = DEFAULT_MAX_SLICE_FRACTION,
) -> Recovered:
    """Rebuild the engine from the state directory (no engine: it holds no state yet).
    `global_enabled` and `max_slice_fraction`: the engine's ([global] in the config)."""
    loaded = _newest_snapshot(state)
    journals = state.journals()
    if loaded is None:
        if journals:
            raise StateDirError(state.path, f"journal {journals[0][1].name} but no snapshot")
        return Recovered(None, 0, 0, 0, [], None, 0, False)
    engine = _engine_of(state, loaded, limits, prices, global_enabled, max_slice_fraction)
    lsn, replayed, truncated = loaded.lsn, 0, False
    events: list[ev.Event] = []
    for index, (first, path) in enumerate(journals):
        last_segment = index + 1 == len(journals)
        if first > lsn + 1:
            raise StateDirError(
                state.path, f"{path.name}: records {lsn + 1}..{first - 1} are missing"
            )
        records, cut = _read_segment(path, last_segment, journals[index + 1 :], lsn)
        truncated |= cut
        for record in records:
            number = record["lsn"]
            assert isinstance(number, int)  # checked by _record
            if number <= lsn:
                continue  # covered by the snapshot, or written twice after a disk error
            if number != lsn + 1:
                raise StateDirError(state.path, f"{path.name}: lsn {number} follows {lsn}")
            _replay(state, path, engine, record, events)
            lsn, replayed = number, replayed + 1
    engine.replayed()
    log.info(
        "recovered",
        extra=fields(
            snapshot=loaded.path.name, lsn=lsn, replayed=replayed, seq=loaded.seq + len(events)
        ),
    )
    earlier = loaded.state.get("format") != FORMAT
    return Recovered(
        engine, lsn, loaded.lsn, loaded.seq, events, loaded.path, replayed, truncated, earlier
    )


def _engine_of(
    state: StateDir,
    loaded: snapshot.Loaded,
    limits: Limits,
    prices: PriceTable,
    global_enabled: bool,
    max_slice_fraction: float,
) -> Engine:
    """The snapshot's engine. A snapshot whose checksums hold but whose state does not
    load (written under other [limits] or policies, or by hand) stops the start as a
    record that does not replay does: falling back would silently lose its records."""
    try:
        return Engine.from_state(
            loaded.state,
            limits=limits,
            prices=prices,
            global_enabled=global_enabled,
            max_slice_fraction=max_slice_fraction,
        )
    except Exception as error:
        raise StateDirError(
            state.path,
            f"{loaded.path.name}: the state does not load: {type(error).__name__}: {error} "
            "(were [limits], [global] or policies changed since it was written?)",
        ) from None


def _newest_snapshot(state: StateDir) -> snapshot.Loaded | None:
    found = state.snapshots()
    problems = []
    for _, path in reversed(found):
        try:
            loaded = snapshot.load(path)
        except snapshot.SnapshotCorrupt as error:
            log.error(
                "SNAPSHOT CORRUPT; falling back to the previous one",
                extra=fields(path=str(path), reason=error.reason),
            )
            problems.append(str(error))
            continue
        return loaded
    if found:
        raise StateDirError(state.path, "no usable snapshot: " + "; ".join(problems))
    return None


def _read_segment(
    path: Path, last_segment: bool, later: list[tuple[int, Path]], applied: int
) -> tuple[list[dict[str, object]], bool]:
    data = path.read_bytes()
    payloads, damage = read_frames(data)
    records = [_record(path, i, payload) for i, payload in enumerate(payloads)]
    if damage is None:
        return records, False
    if frame_follows(data, damage.offset):
        raise StateDirError(
            path.parent,
            f"{path.name}: {damage.reason} at byte {damage.offset}, and records follow it",
        )
    # A damaged tail is a write that never completed, so never acknowledged — if nothing
    # follows it: the end of the last segment, or a segment abandoned after a write
    # error whose successor carries on from its last good record.
    end = records[-1]["lsn"] if records else None
    continued = bool(later) and (end is None or later[0][0] <= int(str(end)) + 1)
    if not last_segment and not continued:
        raise StateDirError(
            path.parent,
            f"{path.name}: {damage.reason} at byte {damage.offset}, and records follow it",
        )
    log.warning(
        "journal tail torn; cut",
        extra=fields(
            path=str(path),
            offset=damage.offset,
            lost_bytes=len(data) - damage.offset,
            reason=damage.reason,
        ),
    )
    with open(path, "r+b") as handle:
        handle.truncate(damage.offset)
        handle.flush()
        os.fsync(handle.fileno())
    return records, True


def _record(path: Path, index: int, payload: bytes) -> dict[str, object]:
    """One frame's record. Its checksum holds, so it is what was written: a payload that
    is no record (a JSON object with an integer lsn) is not a torn write but a file
    budgetd did not write, and stops the start."""
    try:
        record = json.loads(payload)
    except (ValueError, RecursionError) as error:  # not JSON, or not UTF-8
        reason = f"not JSON ({type(error).__name__})"
    else:
        number = record.get("lsn") if isinstance(record, dict) else None
        if isinstance(number, int) and not isinstance(number, bool) and number > 0:
            checked: dict[str, object] = record
            return checked
        reason = "not a journal record (a JSON object with a positive integer lsn)"
    raise StateDirError(path.parent, f"{path.name}: frame {index + 1} is {reason}")


def _replay(
    state: StateDir,
    path: Path,
    engine: Engine,
    record: dict[str, object],
    out: list[ev.Event],
) -> None:
    """Apply one record. One that does not apply as it did live stops the start: going
    on would silently lose an acknowledged mutation."""
    try:
        mutation = decode(record, engine.limits)
        _, events = engine.apply(mutation)
    except Exception as error:
        raise StateDirError(
            state.path,
            f"{path.name}: record {record.get('lsn')} ({record.get('op')}) does not replay: "
            f"{type(error).__name__}: {error} (were [limits], policies or prices changed "
            "since it was written? start with the configuration it was written under)",
        ) from None
    out.extend(events)
