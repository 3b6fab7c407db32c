"""The Redis side of global budgets: leases of a global ledger window's budget.

A global ledger window (`GlobalKey`) lives in Redis as six keys sharing one Cluster
hash slot (`scripts` lists them). Each sidecar (one per host) calls, each an atomic
script on Redis's own clock:

- `lease`: grant up to `wants` per dimension from what is left (cap - used - leased;
  for the CONCURRENCY gauge cap - leased), never past the cap;
- `settle`: add recorded usage to `used` and shrink the lease by usage + give-back,
  once per (sidecar, seq): a resent seq changes nothing (`applied=False`);
- `heartbeat`: keep the sidecar's leases on many windows alive in one round trip;
- `read`: the current `Share`.

A sidecar that stops heartbeating loses its lease at its deadline (every script reaps
first), so a dead host's slice returns to the pool; its last settle seq is kept
`SEQ_KEEP_MS` after it was last seen, so a sidecar restarted from its journal cannot
apply a settle twice. The overshoot bound is `Share.sidecars` x the largest slice.

Every Redis failure (refused, timeout, READONLY, a failover...) surfaces as
`StoreUnavailable`; bad arguments as ValueError naming the argument, before any call.
A call redis-py retries after a lost connection is safe: a settle is idempotent, and a
lease's reply carries the sidecar's whole lease (`Share.lease`), which the leaser
reconciles to. So is one cut at its deadline (`call_timeout_s`, retries and a
Cluster's redirections included), for the same reasons.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.connection import to_bool
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from budgetd.core.dimensions import VECTOR_SIZE, Dimension
from budgetd.scaleout import scripts

DEFAULT_PREFIX = "budgetd:"
# A window's keys outlive its end by this much (a late settle still lands), then expire.
KEY_GRACE_MS = 24 * 3600 * 1000
# A sidecar's last settle seq is forgotten this long after it was last seen.
SEQ_KEEP_MS = 7 * 24 * 3600 * 1000
CONNECT_TIMEOUT_S = 1.0  # opening a socket to Redis (or a Sentinel)
COMMAND_TIMEOUT_S = 1.0  # waiting for one reply
# redis-py retries a command this many times after a connection error or a timeout (a
# pooled connection a Redis restart closed), backing off up to RETRY_BACKOFF_CAP_S.
RETRIES = 1
RETRY_BACKOFF_BASE_S = 0.01
RETRY_BACKOFF_CAP_S = 0.1
SIDECAR_ID_MAX_CHARS = 128
# Dimensions are counter slots (budgetd.core.dimensions): a Dimension, or a summed
# aggregate (cached tokens, latency...) a settle carries too; each at most once a call.
MAX_DIMENSIONS = VECTOR_SIZE
MAX_AMOUNT = 2**53 - 1  # Lua numbers are doubles: integers are exact up to here
MAX_TTL_MS = 24 * 3600 * 1000
REAP_LIMIT = 256  # expired sidecars (and forgotten seqs) one script call handles at most
TAG_HEX_CHARS = 20
KEY_PARTS = ("used", "leased", "lease", "expiry", "seq", "seen")
GAUGE = Dimension.CONCURRENCY
_SIDECAR_ID = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces

Client = aioredis.Redis | RedisCluster


class StoreUnavailable(Exception):
    """Redis did not answer as it should (down, timed out, read-only, ...): `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class GlobalKey:
    """One window of a global ledger: `ledger` is budgetd's ledger key (braces and all),
    `window` its index (0 for a lifetime window), `expires_at_ms` the unix ms after
    which its keys may go (None: a lifetime window, never expires)."""

    ledger: str
    window: int
    expires_at_ms: int | None = None


@dataclass(frozen=True)
class Share:
    """A window as one call left it, per dimension in the order asked: `lease` this
    sidecar's (authoritative), `granted` by this call (zeros but for `lease`), `used`
    settled by all, `leased` by all live sidecars; `sidecars` live sidecars holding a
    lease, `applied` whether the call changed the window as asked (a lease always, a
    settle when its seq was new, a read never), `now_ms` Redis's time, `seq` the last
    settle sequence number Redis applied for this sidecar on the window (-1: none
    kept), which a share's next settle must number above."""

    lease: tuple[int, ...]
    granted: tuple[int, ...]
    used: tuple[int, ...]
    leased: tuple[int, ...]
    sidecars: int
    applied: bool
    now_ms: int
    seq: int = -1

    @classmethod
    def from_reply(cls, reply: Sequence[Any], n: int) -> Share:
        values = [int(v) for v in reply]
        if len(values) != 4 + 4 * n:
            raise StoreUnavailable(f"a script answered {len(values)} values, not {4 + 4 * n}")
        now, sidecars, applied, seq = values[:4]
        rest = values[4:]
        parts = [tuple(rest[i * n : (i + 1) * n]) for i in range(4)]
        return cls(parts[0], parts[1], parts[2], parts[3], sidecars, bool(applied), now, seq)


def key_tag(key: GlobalKey) -> str:
    """The hash tag of a window's keys: a digest, so braces in a ledger key are harmless."""
    digest = hashlib.sha1(f"{key.ledger}\0{key.window}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:TAG_HEX_CHARS]


def redis_keys(key: GlobalKey, prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """The window's Redis keys, in `KEY_PARTS` order (the scripts' KEYS)."""
    tag = key_tag(key)
    return tuple(f"{prefix}{{{tag}}}:{part}" for part in KEY_PARTS)


# --- validation -----------------------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _check_sidecar(sidecar: object) -> str:
    if not isinstance(sidecar, str) or not _SIDECAR_ID.fullmatch(sidecar):
        raise ValueError("sidecar must be a non-empty string of printable ASCII, no spaces")
    if len(sidecar) > SIDECAR_ID_MAX_CHARS:
        raise ValueError(f"sidecar must be at most {SIDECAR_ID_MAX_CHARS} characters")
    return sidecar


def _check_dims(dims: Sequence[int]) -> list[str]:
    if not 1 <= len(dims) <= MAX_DIMENSIONS:
        raise ValueError(f"dims must name 1..{MAX_DIMENSIONS} dimensions, got {len(dims)}")
    for i, dim in enumerate(dims):
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < VECTOR_SIZE:
            raise ValueError(f"dims[{i}] is not a counter slot (0..{VECTOR_SIZE - 1}): {dim!r}")
    if len(set(dims)) != len(dims):
        raise ValueError("dims must not repeat a dimension")
    return [str(int(d)) for d in dims]


def _check_amounts(name: str, values: Sequence[int], n: int) -> list[str]:
    if len(values) != n:
        raise ValueError(f"{name} must have one value per dimension ({n}), got {len(values)}")
    return [str(_check_int(f"{name}[{i}]", v, 0, MAX_AMOUNT)) for i, v in enumerate(values)]


def _check_key(key: object) -> GlobalKey:
    if not isinstance(key, GlobalKey):
        raise ValueError(f"key must be a GlobalKey, got {type(key).__name__}")
    if not isinstance(key.ledger, str) or not key.ledger:
        raise ValueError("key.ledger must be a non-empty string")
    _check_int("key.window", key.window, 0, 2**63 - 1)
    if key.expires_at_ms is not None:
        _check_int("key.expires_at_ms", key.expires_at_ms, 0, 2**62)
    return key


# --- the store ------------------------------------------------------------------------


class RedisStore:
    """The scripts on one Redis client (standalone, Sentinel-managed or Cluster)."""

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        key_grace_ms: int = KEY_GRACE_MS,
        seq_keep_ms: int = SEQ_KEEP_MS,
        secrets: Sequence[str] = (),
        closing: Sequence[Callable[[], Awaitable[None]]] = (),
        call_timeout_s: float | None = None,
    ) -> None:
        if call_timeout_s is not None and not (
            math.isfinite(call_timeout_s) and call_timeout_s > 0
        ):
            raise ValueError("call_timeout_s must be a positive number of seconds")
        # The most one call may take, its retries included (None: only the sockets' own).
        self.call_timeout_s = call_timeout_s
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ValueError("prefix must be a string without braces (they are the hash tag's)")
        self.prefix = prefix
        self.client = client
        self.key_grace_ms = _check_int("key_grace_ms", key_grace_ms, 0, 2**40)
        self.seq_keep_ms = _check_int("seq_keep_ms", seq_keep_ms, 1, 2**40)
        self._secrets = tuple(s for s in secrets if s)
        self._closing = tuple(closing) or (client.aclose,)
        self._lease = client.register_script(scripts.LEASE)
        self._settle = client.register_script(scripts.SETTLE)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._read = client.register_script(scripts.READ)

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for close in self._closing:
            await close()

    def keys(self, key: GlobalKey) -> tuple[str, ...]:
        return redis_keys(key, self.prefix)

    async def lease(
        self,
        key: GlobalKey,
        sidecar: str,
        ttl_ms: int,
        dims: Sequence[int],
        caps: Sequence[int],
        wants: Sequence[int],
    ) -> Share:
        """Grant per dimension min(want, what is left under cap) to `sidecar`, adding
        to its lease, and push its deadline to now + `ttl_ms`."""
        args = self._common(key, sidecar)
        names = _check_dims(dims)
        args += [str(int(GAUGE)), str(_check_int("ttl_ms", ttl_ms, 1, MAX_TTL_MS))]
        args += [str(len(names)), *names, *_check_amounts("caps", caps, len(names))]
        args += _check_amounts("wants", wants, len(names))
        return Share.from_reply(await self._run(self._lease, key, args), len(names))

    async def settle(
        self,
        key: GlobalKey,
        sidecar: str,
        seq: int,
        dims: Sequence[int],
        used: Sequence[int],
        give_back: Sequence[int],
        ttl_ms: int,
    ) -> Share:
        """Count `used` and return `give_back` of `sidecar`'s lease, once per `seq`
        (greater than the last applied one, else nothing changes: applied=False). The
        lease shrinks by used + give_back, never below zero (it may have been reaped).
        CONCURRENCY is a gauge: its `used` must be 0, its slots come back by give_back."""
        args = self._common(key, sidecar)
        names = _check_dims(dims)
        used_args = _check_amounts("used", used, len(names))
        if str(int(GAUGE)) in names and used_args[names.index(str(int(GAUGE)))] != "0":
            raise ValueError("used of CONCURRENCY must be 0: a gauge, give_back returns slots")
        args += [str(int(GAUGE)), str(_check_int("ttl_ms", ttl_ms, 1, MAX_TTL_MS))]
        args += [str(_check_int("seq", seq, 0, MAX_AMOUNT)), str(len(names)), *names]
        args += [*used_args, *_check_amounts("give_back", give_back, len(names))]
        return Share.from_reply(await self._run(self._settle, key, args), len(names))

    async def read(self, key: GlobalKey, sidecar: str, dims: Sequence[int]) -> Share:
        """The window as it is (expired leases reaped first), from `sidecar`'s side."""
        args = self._common(key, sidecar)
        names = _check_dims(dims)
        args += [str(int(GAUGE)), str(len(names)), *names]
        return Share.from_reply(await self._run(self._read, key, args), len(names))

    async def heartbeat(self, keys: Sequence[GlobalKey], sidecar: str, ttl_ms: int) -> list[bool]:
        """Push `sidecar`'s deadline to now + `ttl_ms` on every window of `keys`, in one
        round trip; per key, whether it still held a lease there (False: reaped or
        never leased; the leaser reads or leases again)."""
        calls = [self._common(key, sidecar) for key in keys]
        ttl = str(_check_int("ttl_ms", ttl_ms, 1, MAX_TTL_MS))
        if not calls:
            return []
        try:
            async with asyncio.timeout(self.call_timeout_s):
                replies = await self._pipelined(keys, [[*args, ttl] for args in calls])
        except (RedisError, RedisClusterException, OSError) as exc:  # (TimeoutError too)
            raise StoreUnavailable(self._reason(exc)) from exc
        return [bool(int(reply[1])) for reply in replies]

    async def _pipelined(self, keys: Sequence[GlobalKey], calls: list[list[str]]) -> list[Any]:
        # One EVALSHA per window in one pipeline (in a Cluster each may be another slot;
        # its pipeline routes each command by its keys). A flushed script cache (a
        # restart) is loaded once (on every primary of a Cluster) and the batch sent
        # again, which is safe: a heartbeat only pushes deadlines. Through
        # execute_command: redis-py's ClusterPipeline refuses its `evalsha` method, as
        # it would not load a missing script itself; this loop does.
        for attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            for key, args in zip(keys, calls, strict=True):
                sha, keys_ = self._heartbeat.sha, self.keys(key)
                pipe.execute_command("EVALSHA", sha, len(KEY_PARTS), *keys_, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            missing = any(isinstance(r, NoScriptError) for r in results)
            if missing and attempt == 0:
                self._heartbeat.sha = await self.client.script_load(scripts.HEARTBEAT)
                continue
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    def _common(self, key: GlobalKey, sidecar: str) -> list[str]:
        key = _check_key(key)
        expire_at = "" if key.expires_at_ms is None else str(key.expires_at_ms + self.key_grace_ms)
        return [_check_sidecar(sidecar), expire_at, str(self.seq_keep_ms), str(REAP_LIMIT)]

    async def _run(self, script: AsyncScript, key: GlobalKey, args: list[str]) -> list[Any]:
        try:
            async with asyncio.timeout(self.call_timeout_s):
                reply = await script(keys=self.keys(key), args=args)
        except (RedisError, RedisClusterException, OSError) as exc:  # (TimeoutError too)
            raise StoreUnavailable(self._reason(exc)) from exc
        if not isinstance(reply, list):
            raise StoreUnavailable(f"a script answered {type(reply).__name__}, not an array")
        return reply

    def _reason(self, exc: BaseException) -> str:
        if type(exc) is TimeoutError:  # the call's deadline (asyncio.timeout)
            return f"no answer within {self.call_timeout_s} s (timeout_seconds)"
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:500]


# --- URLs -----------------------------------------------------------------------------

Mode = Literal["single", "sentinel", "cluster"]
_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_SCHEME_LIST = ", ".join(f"{s}://" for s in _SCHEMES)
DEFAULT_PORTS: dict[Mode, int] = {"single": 6379, "sentinel": 26379, "cluster": 6379}
# Query options, as redis-py's own URLs take them (what each is parsed with).
_OPTIONS: dict[str, Callable[[str], object]] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_keepalive": to_bool,
    "health_check_interval": int,
    "max_connections": int,
    "protocol": int,
    "client_name": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_ciphers": str,
    "ssl_check_hostname": to_bool,
}
_SENTINEL_AUTH = ("sentinel_username", "sentinel_password")
_HOST = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL names. `hosts` are (host, port): the server, the Sentinels or
    the Cluster's startup nodes; `unix_path` a socket instead; `master` the Sentinel
    service name. Passwords are kept out of the repr."""

    mode: Mode
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    unix_path: str | None = None
    master: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    options: dict[str, object] = field(default_factory=dict)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.sentinel_password) if s)


def _bad(what: str) -> ValueError:
    # Never quotes the URL: a malformed one may carry a password anywhere.
    return ValueError(f"redis url: {what}")


def parse_url(url: str) -> RedisTarget:
    """The target of `url` (see `connect`), or ValueError naming the part that is wrong."""
    if not isinstance(url, str):
        raise _bad(f"must be a string, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise _bad(f"the scheme must be one of {_SCHEME_LIST}")
    mode, tls = _SCHEMES[scheme.lower()]
    if "#" in rest:
        raise _bad("a fragment (#...) has no meaning here (percent-encode '#' in a password)")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    creds, at, hostpart = netloc.rpartition("@")
    username, password = _credentials(creds) if at else (None, None)
    options, sentinel_auth, query_db = _options(query, mode, tls)
    if scheme.lower() == "unix":
        if hostpart:
            raise _bad("unix:// takes no host: unix:///path/to/redis.sock")
        if not path:
            raise _bad("unix:// needs the socket's path: unix:///path/to/redis.sock")
        return RedisTarget(
            mode, tls, (), unquote(slash + path), None, query_db or 0, username, password,
            options=options,
        )  # fmt: skip
    hosts = _hosts(hostpart, DEFAULT_PORTS[mode])
    if mode == "single" and len(hosts) > 1:
        raise _bad("several hosts need redis+sentinel:// or redis+cluster://")
    master, db = _path(path, mode)
    if query_db is not None and db is not None:
        raise _bad("the database is given twice (path and ?db=)")
    return RedisTarget(
        mode, tls, hosts, None, master, db or query_db or 0, username, password,
        sentinel_auth[0], sentinel_auth[1], options,
    )  # fmt: skip


def _credentials(creds: str) -> tuple[str | None, str | None]:
    user, colon, password = creds.partition(":")
    if not colon and not user:
        raise _bad("the credentials before '@' are empty")
    return (unquote(user) or None), (unquote(password) or None)


def _hosts(text: str, default_port: int) -> tuple[tuple[str, int], ...]:
    if not text:
        raise _bad("no host (redis://host:port)")
    hosts = []
    for number, item in enumerate(text.split(","), start=1):
        if item.startswith("["):
            close = item.find("]")
            if close < 0:
                raise _bad(f"host {number}: an IPv6 address without its closing ']'")
            host, tail = item[1:close], item[close + 1 :]
            if tail and not tail.startswith(":"):
                raise _bad(f"host {number}: only ':port' may follow an IPv6 address")
            port_text = tail[1:] if tail else None
        else:
            host, colon, port_text_ = item.partition(":")
            port_text = port_text_ if colon else None
            if not _HOST.fullmatch(host or "-"):
                raise _bad(f"host {number} has characters a host name cannot have")
        if not host:
            raise _bad(f"host {number} is empty")
        hosts.append((host, _port(port_text, default_port, number)))
    return tuple(hosts)


def _port(text: str | None, default: int, number: int) -> int:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad(f"the port of host {number} must be a number in 1..65535")
    return int(text)


def _path(path: str, mode: Mode) -> tuple[str | None, int | None]:
    """(Sentinel master name, db) from the path after the hosts ('' when none)."""
    parts = path.split("/") if path else []
    if mode == "cluster":
        if any(parts):
            raise _bad("a Cluster URL takes no path (a Cluster has only database 0)")
        return None, None
    if mode == "sentinel":
        if not parts or not parts[0]:
            raise _bad("a Sentinel URL needs the master's name: redis+sentinel://h:p/mymaster")
        if len(parts) > 2:
            raise _bad("a Sentinel URL's path is /<master-name>[/<db>]")
        return unquote(parts[0]), (_db(parts[1]) if len(parts) == 2 and parts[1] else None)
    if len(parts) > 1:
        raise _bad("the path must be a database number: redis://host:port/0")
    return None, (_db(parts[0]) if parts and parts[0] else None)


def _db(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise _bad("the database must be a number (redis://host:port/0)")
    return int(text)


def _options(
    query: str, mode: Mode, tls: bool
) -> tuple[dict[str, object], tuple[str | None, str | None], int | None]:
    """(client options, Sentinel (username, password), ?db=) from the query string."""
    options: dict[str, object] = {}
    auth: dict[str, str] = {}
    db: int | None = None
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if len(values) != 1:
            raise _bad(f"query option {name} is given {len(values)} times")
        if name == "db" and mode != "cluster":
            db = _db(values[0])
        elif name in _SENTINEL_AUTH and mode == "sentinel":
            auth[name] = values[0]
        elif name in _OPTIONS:
            if name.startswith("ssl_") and not tls:
                raise _bad(f"query option {name} needs a TLS scheme (rediss...://)")
            try:
                options[name] = _OPTIONS[name](values[0])
            except (TypeError, ValueError):
                raise _bad(f"query option {name} has an invalid value") from None
        else:
            known = sorted([*_OPTIONS, "db", *_SENTINEL_AUTH])
            raise _bad(f"an unknown query option for this scheme (known: {', '.join(known)})")
    return options, (auth.get(_SENTINEL_AUTH[0]), auth.get(_SENTINEL_AUTH[1])), db


# --- connecting -----------------------------------------------------------------------


def connect(
    url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    timeout_s: float = COMMAND_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    key_grace_ms: int = KEY_GRACE_MS,
    seq_keep_ms: int = SEQ_KEEP_MS,
    call_timeout_s: float | None = None,
) -> RedisStore:
    """A store on the Redis `url` names (no I/O yet: the first call connects):

    - `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path[?db=N]`;
    - `redis+sentinel://[user:pass@]h1:p1,h2:p2/<master>[/db]` and `rediss+sentinel://`
      (the master through its Sentinels; the credentials are the master's, a Sentinel's
      own go in `?sentinel_username=&sentinel_password=`; TLS is for both);
    - `redis+cluster://[user:pass@]h1:p1[,h2:p2...]` and `rediss+cluster://` (startup
      nodes of a Redis Cluster).

    Query options: socket_timeout, socket_connect_timeout (seconds, over `timeout_s`
    and `connect_timeout_s`), ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs,
    ssl_check_hostname, ssl_ciphers, client_name, max_connections, health_check_interval,
    socket_keepalive, protocol. ValueError for a malformed URL, never quoting it.

    Each call ends by `call_timeout_s` (default: the longer of the two timeouts), its
    retries included."""
    for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds")
    target = parse_url(url)
    common: dict[str, Any] = {
        "socket_timeout": float(timeout_s),
        "socket_connect_timeout": float(connect_timeout_s),
        "retry": Retry(ExponentialBackoff(RETRY_BACKOFF_CAP_S, RETRY_BACKOFF_BASE_S), RETRIES),
        "decode_responses": False,
    }
    common.update(target.options)
    client, closing = _client(target, common)
    return RedisStore(
        client,
        prefix=prefix,
        key_grace_ms=key_grace_ms,
        seq_keep_ms=seq_keep_ms,
        secrets=target.secrets(),
        closing=closing,
        call_timeout_s=call_timeout_s or max(float(timeout_s), float(connect_timeout_s)),
    )


def _client(
    target: RedisTarget, common: dict[str, Any]
) -> tuple[Client, list[Callable[[], Awaitable[None]]]]:
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.mode == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        cluster = RedisCluster(startup_nodes=nodes, ssl=target.tls, **auth, **common)
        return cluster, [cluster.aclose]
    if target.mode == "sentinel":
        assert target.master is not None  # parse_url: a Sentinel URL names its master
        own = {k: v for k, v in common.items() if k.startswith(("socket_", "ssl_"))}
        own |= {"retry": common["retry"], "ssl": target.tls}
        own |= {"username": target.sentinel_username, "password": target.sentinel_password}
        # Older redis-py releases leave Sentinel.__init__ unannotated; calling it through
        # a typed name type-checks the same against every release we accept.
        new_sentinel: Callable[..., Sentinel] = Sentinel
        sentinel = new_sentinel(list(target.hosts), sentinel_kwargs=own)
        master = sentinel.master_for(target.master, db=target.db, ssl=target.tls, **auth, **common)
        return master, [master.aclose, sentinel.aclose]
    if target.unix_path is not None:
        client = aioredis.Redis(unix_socket_path=target.unix_path, db=target.db, **auth, **common)
    else:
        host, port = target.hosts[0]
        client = aioredis.Redis(
            host=host, port=port, db=target.db, ssl=target.tls, **auth, **common
        )
    return client, [client.aclose]
