"""Where the daemon listens by default; shared by the daemon and its clients.

The daemon imports these from here (`budgetd.paths` re-exports them): a client installed
without the daemon finds the same default socket.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SOCKET_NAME = "budgetd.sock"
DEFAULT_TCP = "127.0.0.1:50051"


def default_socket_path() -> Path:
    """`$XDG_RUNTIME_DIR/budgetd.sock`, else `budgetd.sock` in a per-user directory under
    the system temp dir (a directory of our own, so no other user can squat the name)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / SOCKET_NAME
    return fallback_socket_dir() / SOCKET_NAME


def fallback_socket_dir() -> Path:
    """The per-user directory under the temp dir; the daemon refuses it unless it is
    ours and private (anyone can create a name in the temp dir first)."""
    return Path(tempfile.gettempdir()) / f"budgetd-{os.getuid()}"


def default_target() -> str:
    """The gRPC target clients use: `$BUDGETD_TARGET` (a bare path means a Unix socket),
    else the default socket."""
    return as_target(os.environ.get("BUDGETD_TARGET") or str(default_socket_path()))


def as_target(value: str) -> str:
    """`/path/to.sock` -> `unix:/path/to.sock`; anything else is already a gRPC target."""
    return f"unix:{value}" if value.startswith("/") else value
