"""The daemon's link to Redis for global policies: the store, the leaser, their health.

`Link.start` connects (lazily: the first sync does the I/O, so a Redis that is down
at start is a degraded link, not a failed start) and starts the leaser task; the
service waits on it when only an empty lease stood in a call's way. `Link.stop`, in
the drain once no call is left, settles everything and gives every lease back, within
a bound (what cannot be given back returns by itself when its lease expires).

The sidecar's id names its leases and settle sequences in Redis, so it must survive a
restart from the same state directory (a restart then resumes its own leases and never
applies a settle twice): it is made once and kept in the directory (`sidecar-id`), or
given in [global] sidecar_id. Without a state directory (memory mode) each start is a
new sidecar: nothing of the last one is remembered, and its leases expire in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from budgetd.logs import fields
from budgetd.persistence.statedir import replace_durably
from budgetd.runtime import Runtime
from budgetd.scaleout.leaser import Leaser
from budgetd.scaleout.redis_store import StoreUnavailable, connect
from budgetd.scaleout.settings import GlobalSettings

log = logging.getLogger("budgetd.global")

SIDECAR_ID_FILE = "sidecar-id"
# The drain's give-back takes at most this long (then leases expire in Redis instead).
GIVE_BACK_S = 2.0
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_.:-]")
HOST_PART_CHARS = 40


class SidecarIdError(Exception):
    """The state directory's sidecar-id file is unreadable or malformed."""


def sidecar_id(settings: GlobalSettings, state_dir: Path | None) -> str:
    """[global] sidecar_id, else the state directory's (made on first use), else a new one."""
    if settings.sidecar_id is not None:
        return settings.sidecar_id
    if state_dir is None:
        return _new_id()
    path = state_dir / SIDECAR_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        made = _new_id()
        replace_durably(path, f"{made}\n")
        return made
    except OSError as error:
        raise SidecarIdError(f"{path}: unreadable ({error.strerror or error})") from None
    if not text or _NOT_IN_ID.search(text) or len(text) > 64:
        raise SidecarIdError(f"{path}: not a sidecar id ([A-Za-z0-9_.:-]{{1,64}}): fix or remove")
    return text


def _new_id() -> str:
    host = _NOT_IN_ID.sub("-", socket.gethostname())[:HOST_PART_CHARS] or "host"
    return f"{host}-{secrets.token_hex(6)}"


class Link:
    def __init__(
        self,
        runtime: Runtime,
        settings: GlobalSettings,
        sidecar: str,
        on_health: Callable[[bool], None],
    ) -> None:
        assert settings.redis_url is not None  # (the daemon makes a Link only then)
        self.runtime = runtime
        self.settings = settings
        self.sidecar = sidecar
        self.store = connect(
            settings.redis_url,
            prefix=settings.key_prefix,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.timeout_s,
        )
        self.leaser = Leaser(runtime, self.store, settings, sidecar)
        self.leaser.on_reachability = on_health
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.leaser.run(), name="budgetd-leaser")
        wait_s = self.settings.lease_wait_s
        # (Set with no wait too: a call an empty lease denied still wakes the leaser.)
        self.runtime.lease_wait = lambda: self.leaser.wait_for_lease(wait_s)
        log.info(
            "global policies on",
            extra=fields(redis=self.settings.shown_url(), sidecar=self.sidecar),
        )

    async def stop(self) -> None:
        """Stop the leaser; settle all and give every lease back (bounded), then close."""
        self.runtime.lease_wait = None
        if self._task is not None:
            self.leaser.stop()
            # (Each Redis call has its deadline: a round ends soon. Only past the bound is
            # it cut off, a call in flight perhaps carried out by Redis after all.)
            done, _ = await asyncio.wait({self._task}, timeout=GIVE_BACK_S)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        try:
            await asyncio.wait_for(self.leaser.sync_all(final=True), GIVE_BACK_S)
            log.info("leases given back", extra=fields(redis_calls=self.leaser.calls))
        except (StoreUnavailable, TimeoutError) as error:
            log.warning(
                "leases not given back: they return when they expire in Redis",
                extra=fields(error=error or "timed out", lease_ttl_s=self.settings.lease_ttl_s),
            )
        except Exception as error:  # e.g. the journal failing: the next start resends
            log.error("leases not given back", extra=fields(error=error))
        with contextlib.suppress(Exception):
            await self.store.close()
