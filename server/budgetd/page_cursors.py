"""Page tokens that name nothing a scoped caller may not see.

`Engine.list_runs` continues a listing after the last run id it looked at. When a scan
stops early (it looks at `list_scan_per_page` runs at most), that id can be another
tenant's run, which a scoped caller must never learn. Such a position is kept here and
the caller gets a handle for it instead: `"cursor "` and random characters (run ids
hold no spaces, so a handle is never mistaken for one). Handles are bounded in number,
oldest dropped first, and not kept across restarts; a handle that is gone answers
INVALID_ARGUMENT, never a silently short listing.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from budgetd.core import InvalidArgument

PREFIX = "cursor "
MAX_CURSORS = 4096  # positions held at once; each is one run id (<= 128 characters)


class PageCursors:
    def __init__(self, capacity: int = MAX_CURSORS) -> None:
        self.capacity = capacity
        self._positions: OrderedDict[str, str] = OrderedDict()

    def hide(self, position: str) -> str:
        """A handle standing for `position` (a run id to continue after)."""
        handle = PREFIX + secrets.token_urlsafe(12)
        self._positions[handle] = position
        if len(self._positions) > self.capacity:
            self._positions.popitem(last=False)
        return handle

    def position(self, token: str) -> str:
        """The position `token` stands for: itself, unless it is a handle."""
        if not token.startswith(PREFIX):
            return token
        position = self._positions.get(token)
        if position is None:
            raise InvalidArgument(
                "page_token", "expired or not a token this server returned; list again"
            )
        return position
