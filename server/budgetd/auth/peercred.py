"""Roles of local users on the Unix socket, from the kernel's peer credentials.

`SO_PEERCRED` gives the uid, gid and pid the client had when it connected (the kernel
records them; a client cannot choose them) and `SO_PEERGROUPS` its supplementary groups.
By default only the daemon's own user, and root (which can read the daemon's state
anyway), is admin; `[auth.unix]` names other uids and gids per role.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from budgetd.auth.caller import Caller, Rate, Role

# Linux's SO_PEERGROUPS (4.13+); Python's socket module does not name it.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
MAX_PEER_GROUPS = 1024  # supplementary groups read per connection (Linux allows 65536)
MAX_LISTED_IDS = 4096  # uids or gids in [auth.unix], all roles together
_UCRED = struct.Struct("3i")  # pid, uid, gid


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The connected client's credentials (from the kernel, at its connect())."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    try:
        packed = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * MAX_PEER_GROUPS)
    except OSError:  # an older kernel, or more groups than we read: the primary gid only
        groups: tuple[int, ...] = ()
    else:
        groups = struct.unpack(f"{len(packed) // 4}I", packed[: len(packed) // 4 * 4])
    return PeerCredentials(pid, uid, gid, groups)


@dataclass(frozen=True, slots=True)
class UnixRoles:
    """Which uids and gids have which role. The daemon's own uid and root are admin."""

    uids: Mapping[int, Role] = field(default_factory=dict)
    gids: Mapping[int, Role] = field(default_factory=dict)
    rate: Rate | None = None  # for agent and reader callers

    @property
    def others_allowed(self) -> bool:
        """Whether any user besides the daemon's own (and root) has a role: then the
        socket must let them connect and the daemon decides per connection."""
        owner = os.geteuid()
        return bool(self.gids) or any(uid not in (owner, 0) for uid in self.uids)

    def caller(self, credentials: PeerCredentials) -> Caller:
        """The connection's caller: the highest role any of its ids has."""
        uid = credentials.uid
        if uid in (os.geteuid(), 0):
            return Caller(f"uid {uid}", Role.ADMIN, "the daemon's own user (or root)")
        found: list[tuple[Role, str]] = []
        role = self.uids.get(uid)
        if role is not None:
            found.append((role, f"auth.unix.{role.value}_uids"))
        for gid in {credentials.gid, *credentials.groups}:
            role = self.gids.get(gid)
            if role is not None:
                found.append((role, f"auth.unix.{role.value}_gids ({gid})"))
        if not found:
            return Caller(
                f"uid {uid}",
                None,
                "auth.unix: its uid and groups are in none of admin_uids, reader_uids, "
                "agent_uids, admin_gids, reader_gids, agent_gids",
            )
        role, rule = max(found, key=lambda pair: _RANK[pair[0]])
        rate = None if role is Role.ADMIN else self.rate
        return Caller(f"uid {uid}", role, rule, (), rate, key=f"uid:{uid}")


_RANK = {Role.READER: 0, Role.AGENT: 1, Role.ADMIN: 2}


def roles_from(
    listed: Mapping[Role, tuple[Iterable[int], Iterable[int]]], rate: Rate | None
) -> UnixRoles:
    """{role: (uids, gids)} -> UnixRoles; an id listed under two roles keeps the higher."""
    uids: dict[int, Role] = {}
    gids: dict[int, Role] = {}
    for role, (role_uids, role_gids) in listed.items():
        for target, ids in ((uids, role_uids), (gids, role_gids)):
            for number in ids:
                if number not in target or _RANK[role] > _RANK[target[number]]:
                    target[number] = role
    return UnixRoles(uids, gids, rate)
