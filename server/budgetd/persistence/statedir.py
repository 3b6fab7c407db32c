"""The state directory: created private, locked for the life of the process, listed.

Two daemons must never write one directory (their journals would interleave), so the
directory holds a `LOCK` file with an exclusive `flock` for as long as the daemon runs;
the kernel drops it when the process dies, even by `kill -9`, so a crash never leaves a
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from pathlib import Path

LOCK_NAME = "LOCK"
JOURNAL = re.compile(r"journal-(\d{16})\.log")
SNAPSHOT = re.compile(r"snapshot-(\d{16})\.snap")


class StateDirError(Exception):
    """The state directory cannot be used: the path and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"state directory {path}: {reason}")


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create (0700) if missing, check it is a private, writable directory, lock it."""
        path = self.path
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = path.stat()
        except FileExistsError:
            raise StateDirError(path, "not a directory") from None
        except OSError as error:
            raise StateDirError(path, error.strerror or str(error)) from None
        if not stat.S_ISDIR(info.st_mode):
            raise StateDirError(path, "not a directory")
        if info.st_uid != os.getuid():
            raise StateDirError(path, f"owned by uid {info.st_uid}, not by this user")
        if info.st_mode & 0o077:
            try:
                path.chmod(0o700)
            except OSError as error:
                raise StateDirError(path, f"cannot make it private: {error.strerror}") from None
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StateDirError(path, f"not writable: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirError(path, "in use by another budgetd (LOCK is held)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def journal_path(self, first_lsn: int) -> Path:
        return self.path / f"journal-{first_lsn:016d}.log"

    def snapshot_path(self, lsn: int) -> Path:
        return self.path / f"snapshot-{lsn:016d}.snap"

    def journals(self) -> list[tuple[int, Path]]:
        """Journal segments by first lsn, oldest first."""
        return self._listed(JOURNAL)

    def snapshots(self) -> list[tuple[int, Path]]:
        """Snapshots by the lsn they cover, oldest first."""
        return self._listed(SNAPSHOT)

    def _listed(self, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
        found = []
        for entry in os.scandir(self.path):
            match = pattern.fullmatch(entry.name)
            if match:
                found.append((int(match.group(1)), Path(entry.path)))
        return sorted(found)


def fsync_directory(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, text: str) -> None:
    """Make `path` hold `text`, whole or not at all, and durably (a temp file fsynced,
    renamed over it, the directory fsynced): for the directory's small files."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_directory(path.parent)
