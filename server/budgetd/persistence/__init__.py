"""Durability: the journal of mutations, snapshots of the whole state, and recovery.

The core knows nothing of this package; the runtime hands it mutation records and asks
it for snapshots. Files live in the state directory (see `statedir`):

    LOCK                          held (flock) for the life of the daemon
    journal-<first lsn>.log       framed, checksummed mutation records, in lsn order
    snapshot-<lsn>.snap           the whole state as of record <lsn>; the newest two kept
    events.lease                  snapshot mode only: the highest event seq handed out
"""
