"""From a state directory to a serving runtime: recover, open the journal, install.

Shared by the daemon and the service tests, so both run exactly the start-up path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable, Sequence

from budgetd.core import Engine, Limits, Policy, PriceTable
from budgetd.core.shares import DEFAULT_MAX_SLICE_FRACTION
from budgetd.errors import Unavailable
from budgetd.event_log import EventLog
from budgetd.logs import fields
from budgetd.persistence import lease, recovery
from budgetd.persistence.journal import Journal
from budgetd.persistence.statedir import StateDir, StateDirError
from budgetd.runtime import Durability, Runtime, Store

log = logging.getLogger("budgetd")


async def restore(
    runtime: Runtime,
    state: StateDir,
    policies: Sequence[Policy],
    limits: Limits,
    prices: PriceTable,
    make_events: Callable[[int], EventLog],
    on_journal_health: Callable[[str | None], None],
    commit_delay_s: float = 0.0,
    *,
    global_enabled: bool = False,
    max_slice_fraction: float = DEFAULT_MAX_SLICE_FRACTION,
) -> bool:
    """Recover `state` into `runtime` (in a thread: the loop keeps answering health
    meanwhile); True when the directory held no state yet (then a first snapshot of
    the empty state is written, so replay always starts from a snapshot). A state of an
    earlier release's form is written anew at once, before anything else is journaled:
    records of this release never follow a snapshot that release wrote."""
    recovered = await asyncio.to_thread(
        functools.partial(
            recovery.recover,
            state,
            limits,
            prices,
            global_enabled=global_enabled,
            max_slice_fraction=max_slice_fraction,
        )
    )
    engine = recovered.engine
    fresh = engine is None
    if engine is None:
        # Reservation ids must not repeat across state directories: a fresh prefix.
        engine = Engine(
            policies,
            limits=limits,
            prices=prices,
            id_prefix=new_id_prefix(),
            global_enabled=global_enabled,
            max_slice_fraction=max_slice_fraction,
        )
    store = Store(state, None, recovered.snapshot_lsn)
    # Past anything a snapshot-mode run published (its lease), whatever the mode now:
    # a switch to the journal after a crash in snapshot mode must not reuse a seq.
    last_seq = max(recovered.snapshot_seq, lease.read(state))
    if runtime.mode is Durability.SNAPSHOT:
        store.lease_seq = lease.extend(state, last_seq)
    events = make_events(last_seq)
    events.publish(recovered.events)
    if runtime.mode is Durability.JOURNAL:
        store.journal = Journal(
            state,
            recovered.lsn + 1,
            runtime.published,
            on_journal_health,
            commit_delay_s=commit_delay_s,
        )
        store.journal.start()
    runtime.install(engine, events, store, recovered.lsn)
    if fresh or recovered.earlier_form:
        # (Calls are still refused meanwhile: none is journaled before this snapshot.)
        try:
            await runtime.snapshot(starting=True)
        except Unavailable as error:
            raise StateDirError(state.path, str(error)) from None
        if fresh:
            said = "new state directory: starting empty"
        else:
            said = "state of an earlier release: written anew"
        log.info(said, extra=fields(path=str(state.path)))
    return fresh


def new_id_prefix() -> str:
    return f"res-{secrets.token_hex(4)}-"
