"""Claiming a Unix socket path for the daemon's lifetime.

Two daemons must never share a path, and a daemon that exits must not remove a socket
that is no longer its own. gRPC itself unlinks whatever is at the path before it binds,
so the claim is a lock, not the socket: an exclusive `flock` on `<socket>.lock`, held
until the process ends (the kernel drops it even on kill -9). Under the lock, a socket
left by a dead daemon is replaced; on exit the socket is removed only if it is still
the one this process bound. The lock file itself stays: removing it would let a second
daemon lock a fresh file while a third still holds the old one.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from pathlib import Path

from budgetd.logs import fields
from budgetd.paths import fallback_socket_dir

log = logging.getLogger("budgetd")
PROBE_TIMEOUT_S = 1.0


class StartError(Exception):
    """The daemon cannot start (a listener cannot be used); the message says why."""


class SocketClaim:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def acquire(self) -> None:
        """Take the path: private directory, the lock, then any stale socket removed."""
        try:
            self._prepare_directory()
            self._lock()
            self._clear_stale()
        except OSError as error:
            raise StartError(f"cannot use {self.path}: {error.strerror or error}") from None

    def bound(self, mode: int = 0o600) -> None:
        """After the server bound the path: owner-only (0600), unless other users have
        roles (0666: the daemon decides from their peer credentials), and remembered
        as ours."""
        os.chmod(self.path, mode)
        info = self.path.stat()
        self._identity = (info.st_dev, info.st_ino)

    def release(self) -> None:
        """Remove the socket if it is still ours; the lock goes with the process."""
        if self._identity is not None:
            try:
                info = self.path.lstat()
            except FileNotFoundError:
                return
            if (info.st_dev, info.st_ino) == self._identity:
                self.path.unlink(missing_ok=True)

    def _prepare_directory(self) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if directory == fallback_socket_dir():
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise StartError(f"{directory} is not a directory owned by this user")
            if info.st_mode & 0o022:
                raise StartError(f"{directory} is writable by others; make it 0700")

    def _lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartError(
                f"another budgetd is running on {self.path}; stop it or choose --socket"
            ) from None
        self._lock_fd = fd  # held (open) until the process ends

    def _clear_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise StartError(
                f"{self.path} exists and is not a socket; remove it or choose --socket"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(PROBE_TIMEOUT_S)
        try:
            probe.connect(str(self.path))
        except OSError as error:
            if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise StartError(f"cannot check {self.path}: {error.strerror or error}") from None
            self.path.unlink(missing_ok=True)  # nobody listens: a dead daemon's socket
            log.info("stale socket replaced", extra=fields(path=str(self.path)))
            return
        finally:
            probe.close()
        # Listening but not holding the lock: a process we cannot coordinate with.
        raise StartError(f"another process is listening on {self.path}; choose --socket")
