"""The Unix socket when other local users have roles: peer credentials per connection.

gRPC's Python server tells a call nothing about a Unix-socket client (its peer is just
"unix:", and grpc core exposes no SO_PEERCRED), and it cannot adopt a socket accepted
elsewhere. So, only when `[auth.unix]` gives a role to someone besides the daemon's own
user, the daemon accepts on the real socket itself, reads the client's credentials
(`SO_PEERCRED`, `SO_PEERGROUPS`) and relays the connection's bytes, unchanged, to the
gRPC server on a socket in a private directory. Each relay connects from its own
kernel-chosen abstract address, which gRPC reports as the call's peer
("unix-abstract:..."), and the gate looks the caller up by it.

The relay is a pair of asyncio protocols on the daemon's loop: each chunk is one read
and one write, with backpressure both ways, no parsing. With only the owner allowed,
none of this runs: gRPC listens on the socket itself (mode 0600).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, cast

from budgetd.auth.caller import Caller
from budgetd.auth.peercred import PeerCredentials, UnixRoles, peer_credentials
from budgetd.logs import fields

log = logging.getLogger("budgetd")

MAX_CONNECTIONS = 4096  # relayed connections at once, all users
MAX_CONNECTIONS_PER_UID = 512  # so that one user cannot take them all
BACKLOG = 1024
REFUSAL_LOG_INTERVAL_S = 10.0
# What a client may send before its relay is up (a connect to a local socket: well under
# a millisecond); past it the client's reading pauses until then.
EARLY_BYTES_MAX = 256 * 1024  # one log line per interval, however many are refused


class UnixProxy:
    def __init__(
        self,
        path: Path,
        roles: UnixRoles,
        max_connections: int = MAX_CONNECTIONS,
        max_per_uid: int = MAX_CONNECTIONS_PER_UID,
    ) -> None:
        self.path = path
        self.roles = roles
        self.max_connections = max_connections
        self.max_per_uid = max_per_uid
        # Private to the daemon's user (mkdtemp makes it 0700): nobody else can reach
        # the gRPC server behind the relay.
        self._directory = Path(tempfile.mkdtemp(prefix="budgetd-grpc-"))
        self.backend = self._directory / "grpc.sock"
        self.callers: dict[str, Caller] = {}  # by the relay's address, as gRPC's peer
        self._per_uid: dict[int, int] = {}
        self._server: asyncio.AbstractServer | None = None
        self._refused = 0
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL_S
        self.starting: set[asyncio.Task[None]] = set()  # relays being set up (kept alive)

    def caller(self, peer: str) -> Caller | None:
        return self.callers.get(peer)

    async def start(self, mode: int = 0o666) -> None:
        """Listen on the real socket (the path must be free: see SocketClaim). Its mode
        lets every local user connect; the daemon decides what each may do."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            os.chmod(self.path, mode)
            listener.listen(BACKLOG)
            listener.setblocking(False)
            loop = asyncio.get_running_loop()
            self._server = await loop.create_unix_server(
                lambda: _Front(self), sock=listener, backlog=BACKLOG
            )
        except BaseException:
            listener.close()
            raise

    def stop_accepting(self) -> None:
        """At the drain: no new connections; open ones end with the gRPC server's."""
        if self._server is not None:
            self._server.close()

    def remove_backend(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)

    # The relay's bookkeeping -------------------------------------------------------

    def admit(self, credentials: PeerCredentials) -> str | None:
        """Count a new connection, or say why it is refused."""
        if len(self.callers) >= self.max_connections:
            return f"{self.max_connections} connections open (all users)"
        if self._per_uid.get(credentials.uid, 0) >= self.max_per_uid:
            return f"{self.max_per_uid} connections open for uid {credentials.uid}"
        self._per_uid[credentials.uid] = self._per_uid.get(credentials.uid, 0) + 1
        return None

    def release(self, uid: int, peer: str | None, caller: Caller | None) -> None:
        count = self._per_uid.get(uid, 0) - 1
        if count > 0:
            self._per_uid[uid] = count
        else:
            self._per_uid.pop(uid, None)
        # Only our own entry: the kernel may already have given the address to a newer
        # relay connection, whose entry must stay.
        if peer is not None and self.callers.get(peer) is caller:
            del self.callers[peer]

    def refused(self, credentials: PeerCredentials | None, reason: str) -> None:
        self._refused += 1
        now = asyncio.get_running_loop().time()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            self._refusal_logged_at = now
            log.warning(
                "unix connection refused",
                extra=fields(
                    reason=reason,
                    uid=credentials.uid if credentials else "?",
                    refused_so_far=self._refused,
                ),
            )


class _Relay(asyncio.Protocol):
    """One side of a relayed connection: what it reads, the other side writes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: _Relay | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the Transport methods without deriving from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close: HTTP/2 has no use for a half-closed connection

    def pause_writing(self) -> None:  # our peer reads slower than the other side sends
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()


class _Front(_Relay):
    """The client's side: credentials, then a relay to the gRPC server. What arrives
    before the relay is up waits (at most EARLY_BYTES_MAX, then reading pauses)."""

    def __init__(self, proxy: UnixProxy) -> None:
        super().__init__()
        self.proxy = proxy
        self.credentials: PeerCredentials | None = None
        self.peer: str | None = None
        self.caller: Caller | None = None
        self.early: list[bytes] | None = []  # None once the relay is up
        self.early_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock: Any = transport.get_extra_info("socket")
        try:
            credentials = peer_credentials(sock)
        except OSError as error:
            self.proxy.refused(None, f"no peer credentials: {error.strerror or error}")
            self._abort()
            return
        refusal = self.proxy.admit(credentials)
        if refusal is not None:
            self.proxy.refused(credentials, refusal)
            self._abort()
            return
        self.credentials = credentials
        self.caller = self.proxy.roles.caller(credentials)
        task = asyncio.get_running_loop().create_task(self._connect(), name="budgetd-unix-relay")
        self.proxy.starting.add(task)
        task.add_done_callback(self.proxy.starting.discard)

    async def _connect(self) -> None:
        back = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        relay = _Relay()
        relay.other = self
        try:
            back.bind("")  # Linux autobind: a unique abstract address chosen by the kernel
            back.setblocking(False)
            name: bytes = back.getsockname()
            self.peer = "unix-abstract:" + name[1:].decode("ascii")
            assert self.caller is not None
            self.proxy.callers[self.peer] = self.caller  # before any byte reaches gRPC
            loop = asyncio.get_running_loop()
            await loop.sock_connect(back, str(self.proxy.backend))
            await loop.create_unix_connection(lambda: relay, sock=back)
        except OSError:
            back.close()
            self._abort()
            return
        self.other = relay
        early, self.early = self.early or [], None
        assert relay.transport is not None
        for chunk in early:
            relay.transport.write(chunk)
        if self.transport is None:  # the client left meanwhile
            relay.transport.close()
        elif self.early_bytes > EARLY_BYTES_MAX:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        early = self.early
        if early is None:
            super().data_received(data)
            return
        early.append(data)
        self.early_bytes += len(data)
        if self.early_bytes > EARLY_BYTES_MAX and self.transport is not None:
            self.transport.pause_reading()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.transport = None
        if self.credentials is not None:
            self.proxy.release(self.credentials.uid, self.peer, self.caller)
