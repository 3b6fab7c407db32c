"""Where the daemon listens by default: the client's definitions, so both always agree.

They live in the SDK (`budgetd_client.paths`), which the daemon's distribution depends on;
the SDK must install and run without the daemon.
"""

from __future__ import annotations

from budgetd_client.paths import (
    DEFAULT_TCP,
    SOCKET_NAME,
    as_target,
    default_socket_path,
    default_target,
    fallback_socket_dir,
)

__all__ = [
    "DEFAULT_TCP",
    "SOCKET_NAME",
    "as_target",
    "default_socket_path",
    "default_target",
    "fallback_socket_dir",
]
