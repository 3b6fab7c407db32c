"""Bearer tokens for TCP callers, read from token files that hold only their hashes.

A token file is TOML:

    [[tokens]]
    name = "acme-agents"          # in logs and errors, never the token
    sha256 = "<64 hex digits>"    # sha256 of the token's UTF-8 bytes
    role = "agent"                # agent | reader | admin
    scope = { tenant = "acme" }   # optional, agent and reader only
    rate_per_second = 100         # optional: this token's own rate (0 = no limit)
    rate_burst = 200

A caller sends `authorization: Bearer <token>`; the daemon hashes what it gets and looks
the hash up, so neither the files nor the daemon's memory hold a usable token. The files
are read at start and again on SIGHUP (all of them, or none: a bad file keeps the tokens
in force). Every bound is a named constant below.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from budgetd.auth.caller import ROLE_NAMES, Caller, Rate, Role
from budgetd.core import InvalidArgument, Limits
from budgetd.core.usage import EdgeRules

MAX_TOKEN_FILES = 16
MAX_TOKEN_FILE_BYTES = 1 << 20
MAX_TOKENS = 10_000  # in all files together
MAX_TOKEN_CHARS = 4096  # a presented token longer than this is refused unhashed
TOKEN_NAME = re.compile(r"[a-z0-9_.-]{1,64}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_RATE = 1_000_000
_ENTRY_KEYS = ("name", "sha256", "role", "scope", "rate_per_second", "rate_burst")


class TokenFileError(Exception):
    """A token file that cannot be used: which file, which key, why."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        super().__init__(f"{path}:{key}: {reason}" if key else f"{path}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_token() -> str:
    """A fresh random token: 32 bytes, URL-safe text."""
    return "bdt_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Callers by the sha256 of their token."""

    by_digest: Mapping[bytes, Caller]
    files: tuple[Path, ...] = ()

    def lookup(self, token: str) -> Caller | None:
        if len(token) > MAX_TOKEN_CHARS:
            return None
        return self.by_digest.get(digest(token))

    def __len__(self) -> int:
        return len(self.by_digest)


EMPTY = TokenTable({})


def load(paths: Sequence[Path], default_rate: Rate | None, limits: Limits) -> TokenTable:
    """Every token of every file; names and hashes unique across all of them."""
    if len(paths) > MAX_TOKEN_FILES:
        raise TokenFileError(paths[0], "", f"at most {MAX_TOKEN_FILES} token files")
    rules = EdgeRules(limits)
    callers: dict[bytes, Caller] = {}
    names: dict[str, Path] = {}
    for path in paths:
        for i, entry in enumerate(_entries(path)):
            where = f"tokens[{i}]"
            name, hashed, caller = _caller(path, where, entry, default_rate, rules)
            if name in names:
                raise TokenFileError(path, f"{where}.name", f"{name!r} is already in {names[name]}")
            if hashed in callers:
                raise TokenFileError(path, f"{where}.sha256", "the same hash is listed twice")
            if len(callers) >= MAX_TOKENS:
                raise TokenFileError(path, where, f"more than {MAX_TOKENS} tokens in all files")
            names[name] = path
            callers[hashed] = caller
    return TokenTable(callers, tuple(paths))


def _entries(path: Path) -> list[Mapping[str, object]]:
    data = _read(path)
    unknown = sorted(set(data) - {"tokens"})
    if unknown:
        raise TokenFileError(path, unknown[0], "unknown key (known: tokens)")
    entries = data.get("tokens", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise TokenFileError(path, "tokens", "must be an array of tables ([[tokens]])")
    return entries


def _read(path: Path) -> dict[str, object]:
    """The file's TOML. Refused when someone other than its owner (this user, or root)
    could change it: whoever writes a token file can make themselves admin."""
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not hang the daemon here.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            _check_file(path, os.fstat(fd))
            chunks, size = [], 0
            while chunk := os.read(fd, MAX_TOKEN_FILE_BYTES + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_TOKEN_FILE_BYTES:
                    raise TokenFileError(path, "", f"larger than {MAX_TOKEN_FILE_BYTES} bytes")
        finally:
            os.close(fd)
    except OSError as error:
        raise TokenFileError(path, "", f"cannot read: {error.strerror or error}") from None
    try:
        return tomllib.loads(b"".join(chunks).decode("utf-8"))
    except UnicodeDecodeError:
        raise TokenFileError(path, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise TokenFileError(path, "", f"not valid TOML: {error}") from None


def _check_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(path, "", "not a regular file")
    if info.st_mode & 0o022:
        raise TokenFileError(
            path, "", "writable by group or others; make it chmod go-w (0600 or 0644)"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise TokenFileError(path, "", f"owned by uid {info.st_uid}, not by this user")


def _caller(
    path: Path, where: str, entry: Mapping[str, object], default_rate: Rate | None, rules: EdgeRules
) -> tuple[str, bytes, Caller]:
    def bad(key: str, reason: str) -> TokenFileError:
        return TokenFileError(path, f"{where}.{key}" if key else where, reason)

    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise bad(unknown[0], f"unknown key (known: {', '.join(_ENTRY_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or TOKEN_NAME.fullmatch(name) is None:
        raise bad("name", "required, matching [a-z0-9_.-]{1,64}")
    hashed = entry.get("sha256")
    if not isinstance(hashed, str) or SHA256_HEX.fullmatch(hashed) is None:
        raise bad("sha256", "required: the token's sha256 as 64 lowercase hex digits")
    role_name = entry.get("role")
    if role_name not in ROLE_NAMES:
        raise bad("role", f"required, one of {', '.join(ROLE_NAMES)}")
    role = Role(role_name)
    try:
        scope = scope_items(entry.get("scope", {}), role, rules)
        rate = rate_of(entry, default_rate, role)
    except ValueError as error:
        key, _, reason = str(error).partition(": ")
        raise bad(key, reason) from None
    rule = f"token file {path}"
    caller = Caller(f"token {name!r}", role, rule, scope, rate, key=f"token:{name}")
    return name, bytes.fromhex(hashed), caller


def scope_items(raw: object, role: Role, rules: EdgeRules) -> tuple[tuple[str, str], ...]:
    """A scope table checked as labels are (key syntax, value size, how many); raises
    ValueError("key: reason")."""
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError('scope: must be a table of label = "value"')
    if raw and role is Role.ADMIN:
        raise ValueError("scope: an admin cannot be scoped (it manages every policy)")
    if any(value in ("", "*") for value in raw.values()):
        raise ValueError('scope: values are exact: not "" and not "*"')
    try:
        rules.labels(raw, "scope")
    except InvalidArgument as error:
        raise ValueError(f"{error.field}: {error.rule}") from None
    return tuple(sorted(raw.items()))


def rate_of(entry: Mapping[str, object], default: Rate | None, role: Role) -> Rate | None:
    """The entry's own rate where it sets one, else the default; raises
    ValueError("key: reason"). Admins are never limited."""
    if role is Role.ADMIN:
        return None
    if "rate_per_second" not in entry and "rate_burst" not in entry:
        return default
    per_second = entry.get("rate_per_second", default.per_second if default else 0)
    if isinstance(per_second, bool) or not isinstance(per_second, int | float):
        raise ValueError("rate_per_second: must be a number")
    if not 0 <= per_second <= MAX_RATE:
        raise ValueError(f"rate_per_second: must be in 0..{MAX_RATE} (0 = no limit)")
    if per_second == 0:
        return None
    if "rate_per_second" in entry or default is None:
        burst = entry.get("rate_burst", max(1, round(per_second * 2)))
    else:
        burst = entry.get("rate_burst", default.burst)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 2 * MAX_RATE:
        raise ValueError(f"rate_burst: must be an integer in 1..{2 * MAX_RATE}")
    return Rate(float(per_second), burst)


def entry_text(name: str, token: str, role: str, scope: Iterable[tuple[str, str]] = ()) -> str:
    """The `[[tokens]]` entry of a new token (what `python -m budgetd.auth new` prints).
    JSON strings are TOML basic strings: values are quoted and escaped alike."""
    lines = [
        "[[tokens]]",
        f"name = {json.dumps(name)}",
        f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"',
        f"role = {json.dumps(role)}",
    ]
    pairs = ", ".join(f"{json.dumps(key)} = {json.dumps(value)}" for key, value in scope)
    if pairs:
        lines.append(f"scope = {{ {pairs} }}")
    return "\n".join(lines) + "\n"
