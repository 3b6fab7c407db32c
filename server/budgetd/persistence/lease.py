"""Snapshot mode's event-number lease: events are never renumbered after a crash.

Without a journal, a crash loses the events published since the last snapshot, and a
restart numbering from the snapshot would hand the same seqs out again. So the highest
seq that may be handed out is written down first (`events.lease`), a block at a time,
and a restart after a crash numbers from the lease on (subscribers get a Gap).
"""

from __future__ import annotations

from budgetd.persistence.statedir import StateDir, StateDirError, replace_durably

LEASE_NAME = "events.lease"
LEASE_BLOCK = 1 << 20


def read(state: StateDir) -> int:
    path = state.path / LEASE_NAME
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        return 0
    except (ValueError, OSError) as error:
        raise StateDirError(state.path, f"{LEASE_NAME}: unreadable ({error})") from None


def extend(state: StateDir, wanted: int) -> int:
    """Lease seqs up to at least `wanted` (one small fsynced write per block)."""
    value = wanted + LEASE_BLOCK
    write(state, value)
    return value


def write(state: StateDir, value: int) -> None:
    replace_durably(state.path / LEASE_NAME, f"{value}\n")
