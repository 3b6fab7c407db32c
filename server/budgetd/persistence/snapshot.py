"""Snapshots: the whole state as of one journal position, written atomically.

A snapshot file is two frames: a small JSON header (format, the lsn and event seq it
covers, when it was taken, the body's size) and the body, the engine's exported state as
JSON. It is written to a temp file, fsynced, renamed into place and the directory
fsynced, so a reader finds the old snapshot or the whole new one. The newest two are
kept: a corrupt newest falls back to the one before (the journal is kept back to it).

Serving must not stall while a million ledgers are serialised, so the writing is done
by a forked child (as Redis writes its RDB files): `fork()` costs the parent a copy of
its page tables, and the child sees a frozen, consistent copy of the state, copy-on-write,
for as long as it takes to write it. The child never touches gRPC, logging or the event
loop; it reports through a pipe and leaves with `os._exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budgetd.core import Engine
from budgetd.persistence.frames import frame, read_frames
from budgetd.persistence.statedir import StateDir, fsync_directory

FORMAT = "budgetd.snapshot/1"
KEEP = 2
PR_SET_PDEATHSIG = 1
CHILD_NICENESS = 19  # background work: a slower snapshot only means a longer journal


class SnapshotCorrupt(Exception):
    """A snapshot file that cannot be used: the path and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


class SnapshotFailed(Exception):
    """Writing a snapshot failed (nothing on disk changed)."""


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    lsn: int
    seq: int
    size_bytes: int
    taken_at: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Loaded:
    path: Path
    lsn: int
    seq: int
    taken_at: float
    state: dict[str, Any]


def write(state_dir: StateDir, engine: Engine, lsn: int, seq: int, taken_at: float) -> Written:
    """Export `engine` and write it as the snapshot covering `lsn` (any thread or a
    child process; the caller makes sure the engine does not change meanwhile)."""
    started = time.perf_counter()
    body = json.dumps(engine.export_state(), separators=(",", ":")).encode()
    header = {"format": FORMAT, "lsn": lsn, "seq": seq, "taken_at": taken_at, "body": len(body)}
    data = frame(json.dumps(header).encode()) + frame(body)
    path = state_dir.snapshot_path(lsn)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        fsync_directory(state_dir.path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise SnapshotFailed(f"{path}: {error.strerror or error}") from None
    return Written(path, lsn, seq, len(data), taken_at, time.perf_counter() - started)


def prune(state_dir: StateDir) -> list[int]:
    """Keep the newest KEEP snapshots, delete older ones and stale temp files; returns
    the lsns of those kept, oldest first."""
    found = state_dir.snapshots()
    for _, path in found[:-KEEP]:
        path.unlink(missing_ok=True)
    for stale in state_dir.path.glob(".snapshot-*.tmp"):
        stale.unlink(missing_ok=True)
    return [lsn for lsn, _ in found[-KEEP:]]


def load(path: Path) -> Loaded:
    """Read and verify one snapshot; `SnapshotCorrupt` says why it cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SnapshotCorrupt(path, f"unreadable: {error.strerror or error}") from None
    payloads, damage = read_frames(data)
    if damage is not None or len(payloads) != 2:
        reason = damage.reason if damage else f"{len(payloads)} frames, expected 2"
        raise SnapshotCorrupt(path, reason)
    try:
        header = json.loads(payloads[0])
        if not isinstance(header, dict):
            raise SnapshotCorrupt(path, "the header is not a JSON object")
        if header.get("format") != FORMAT:
            raise SnapshotCorrupt(path, f"format {header.get('format')!r}, expected {FORMAT!r}")
        lsn, seq, taken_at = header["lsn"], header["seq"], header["taken_at"]
        if not all(_count(value) for value in (lsn, seq)):
            raise SnapshotCorrupt(path, "lsn and seq must be non-negative integers")
        if isinstance(taken_at, bool) or not isinstance(taken_at, int | float):
            raise SnapshotCorrupt(path, "taken_at must be a number")
        state = json.loads(payloads[1])
        if not isinstance(state, dict):
            raise SnapshotCorrupt(path, "the body is not a JSON object")
        return Loaded(path, lsn, seq, float(taken_at), state)
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise SnapshotCorrupt(
            path, f"unreadable content: {type(error).__name__}: {error}"
        ) from None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def write_in_child(
    state_dir: StateDir, engine: Engine, lsn: int, seq: int, taken_at: float
) -> Written:
    """`write` in a forked child; the event loop is blocked only for the fork itself."""
    if os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "0").lower() not in ("0", "false", "no"):
        raise SnapshotFailed("GRPC_ENABLE_FORK_SUPPORT is on; snapshots need it off (unset it)")
    read_end, write_end = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError as error:  # no memory or processes left for a child
        os.close(read_end)
        os.close(write_end)
        raise SnapshotFailed(f"cannot fork the snapshot writer: {error.strerror}") from None
    if pid == 0:  # the child: a frozen copy of the state, nothing else to do
        _child(parent, write_end, state_dir, engine, lsn, seq, taken_at)
    os.close(write_end)
    try:
        # The thread owns `read_end` (it closes it): a cancelled wait must not close a
        # descriptor that thread is still reading, whose number the next pipe would reuse.
        report = await asyncio.to_thread(_collect, pid, read_end)
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the thread then reads EOF and reaps it
        raise
    if "error" in report:
        raise SnapshotFailed(report["error"])
    return Written(Path(report["path"]), lsn, seq, report["size"], taken_at, report["seconds"])


def _child(
    parent: int,
    write_end: int,
    state_dir: StateDir,
    engine: Engine,
    lsn: int,
    seq: int,
    taken_at: float,
) -> None:
    code = 1
    try:
        gc.disable()  # a collection would touch (and so copy) every object
        # First of all: the listeners and the lock are the parent's, and a child that
        # outlives a killed parent must not keep its port, socket or lock (`read_end`,
        # below `write_end`, goes with them).
        os.closerange(3, write_end)
        os.closerange(write_end + 1, os.sysconf("SC_OPEN_MAX"))
        _die_with_parent(parent)
        os.nice(CHILD_NICENESS)  # on a busy host the serving parent comes first
        try:
            written = write(state_dir, engine, lsn, seq, taken_at)
            report: dict[str, Any] = {
                "path": str(written.path),
                "size": written.size_bytes,
                "seconds": written.seconds,
            }
        except SnapshotFailed as error:
            report = {"error": str(error)}
        except Exception as error:
            report = {"error": f"{type(error).__name__}: {error}"}
        os.write(write_end, json.dumps(report).encode())
        code = 0
    finally:
        os._exit(code)


def _prctl() -> Any:
    """prctl(2), looked up once in the parent: a forked child of a threaded process
    should not dlopen. None where there is none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PRCTL = _prctl()


def _die_with_parent(parent: int) -> None:
    if PRCTL is not None:
        PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
    # Without prctl the child still ends once its write is done.
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _collect(pid: int, read_end: int) -> dict[str, Any]:
    chunks = []
    try:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"error": f"snapshot writer exited with status {os.waitstatus_to_exitcode(status)}"}
    report: dict[str, Any] = json.loads(b"".join(chunks))
    return report
