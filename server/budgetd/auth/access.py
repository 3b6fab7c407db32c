"""What the settings say about callers, for the daemon: which listener needs the gate,
the Unix socket's mode, TLS, and what a SIGHUP reloads (token files, TLS files).

- The Unix socket, when only the daemon's own user (and root) has a role: gRPC listens on
  it directly, mode 0600, and no call pays for a check (the file mode is the fence).
  When `[auth.unix]` names anyone else: mode 0666, the relay (`unix_proxy`) reads each
  connection's peer credentials, and the gated server decides per call.
- TCP: the gated server (tokens, client certificates, the anonymous role), unless
  `auth.anonymous_tcp = "admin"` (everyone is admin: nothing to check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from budgetd.auth import tokens
from budgetd.auth.caller import Role
from budgetd.auth.gate import Identities, anonymous_tcp
from budgetd.auth.tls import Tls
from budgetd.auth.unix_proxy import UnixProxy
from budgetd.config import AuthSettings, Settings

OWNER_SOCKET_MODE = 0o600
SHARED_SOCKET_MODE = 0o666


@dataclass
class Access:
    settings: AuthSettings
    proxy: UnixProxy | None = None
    tls: Tls | None = None
    identities: Identities | None = None
    tcp_gated: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Access:
        auth = settings.auth
        access = cls(auth)
        if settings.socket is not None and auth.unix.others_allowed:
            access.proxy = UnixProxy(settings.socket, auth.unix)
        if auth.tls is not None and settings.tcp is not None:
            access.tls = Tls(auth.tls, auth.tls_material)
        access.tcp_gated = settings.tcp is not None and auth.anonymous_tcp is not Role.ADMIN
        if access.proxy is not None or access.tcp_gated:
            access.identities = Identities(
                anonymous=anonymous_tcp(auth.anonymous_tcp, auth.rate),
                tokens=auth.tokens,
                certificates=auth.certificates,
                proxy=access.proxy,
            )
        return access

    @property
    def socket_mode(self) -> int:
        return SHARED_SOCKET_MODE if self.proxy is not None else OWNER_SOCKET_MODE

    def summary(self) -> dict[str, object]:
        """For the `ready` log line."""
        auth = self.settings
        anonymous = auth.anonymous_tcp.value if auth.anonymous_tcp else "none"
        return {
            "unix_auth": "peer-credentials" if self.proxy is not None else "owner-only",
            "tcp_auth": (
                f"tokens={len(auth.tokens)} "
                f"certificates={len(auth.certificates.by_identity) if auth.certificates else 0} "
                f"anonymous={anonymous}"
            ),
            "tls": ("mtls" if self.tls.mutual else "tls") if self.tls is not None else "off",
        }

    def reload_tokens(self, settings: Settings) -> int | None:
        """Read the token files again (all or nothing; raises TokenFileError). None: the
        daemon has none."""
        auth = self.settings
        if not auth.token_files or self.identities is None:
            return None
        table = tokens.load(auth.token_files, auth.rate, settings.limits)
        self.identities.tokens = table  # one assignment: a call sees the old or the new
        return len(table)


def closed_directory(socket: Path) -> Path | None:
    """The first directory above the socket that neither group nor others may traverse
    (then the users of [auth.unix] cannot reach the socket, whatever its mode)."""
    for directory in socket.parents:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return directory
        if not mode & 0o011:
            return directory
    return None
